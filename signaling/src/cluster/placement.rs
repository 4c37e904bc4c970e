//! Room placement: which node a new room goes to, and what a join learns about where its room lives. Pure: the
//! shell reads the registry and Redis, this decides.
//!
//! A room lives on one node at a time. The first join (or the admin API) places it: the node that received the join
//! picks a candidate from the registry with [`choose`] and asks Redis to record it, atomically, unless a live node
//! already holds the room (the Redis script in the shell); whatever Redis answers is where the room lives. A room
//! whose node is gone (its heartbeat expired, or it drained) is placed again by the next join.

use super::registry::NodeInfo;

/// Where a join goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This node hosts the room.
    Here,
    /// Another node does: redirect the client there.
    There { node: String, url: String },
    /// The cluster cannot tell now (Redis unreachable) and the room is not here: refuse with a retryable error.
    Unavailable,
}

/// How much a room placed since the last heartbeat adds to its node's load (as participants): a new room brings a
/// few members, and without it every room placed within one heartbeat would go to the same node.
pub const NEW_ROOM_WEIGHT: usize = 3;

/// A node's score may exceed the least loaded one's by this much and still be picked when it is the node the join
/// reached: a redirect costs the client a round trip, a participant more costs a node little.
pub const SELF_SLACK: f64 = 2.0;

/// The node a new room should go to: among the live nodes of `region` (all live nodes if none is there), the least
/// loaded one, preferring `me` when it is within [`SELF_SLACK`] of the least loaded; ties go to the smaller id, so
/// two nodes deciding at once agree. `None` when the list is empty.
pub fn choose<'a>(nodes: &'a [NodeInfo], me: &str, region: &str) -> Option<&'a NodeInfo> {
    let local: Vec<&NodeInfo> = nodes.iter().filter(|n| n.region == region).collect();
    let pool: Vec<&NodeInfo> = if local.is_empty() { nodes.iter().collect() } else { local };
    let best =
        pool.iter().copied().min_by(|a, b| a.load.score().total_cmp(&b.load.score()).then_with(|| a.id.cmp(&b.id)))?;
    match pool.iter().find(|n| n.id == me) {
        Some(mine) if mine.load.score() <= best.load.score() + SELF_SLACK => Some(mine),
        _ => Some(best),
    }
}

/// Where a participant of a room that already lives on `home` is served, rooms spanning nodes (issue 19). `region`
/// is the joiner's region, `serving` the nodes that serve the room's members already, and a node with `full`
/// participants or more has no room for more (`[cluster] full_participants`; a count rather than the load score,
/// so that an operator can say what full is and a decision does not turn on CPU noise). In order:
/// 1. `home`, while it has room and is in the joiner's region (or no live node is): a room on one node is the cheap
///    case, nothing crosses between nodes;
/// 2. a node that already serves the room, in the joiner's region, with room: its relays are there already (a track
///    crosses to a node once, however many subscribers it has there);
/// 3. the least loaded node of the joiner's region with room (of any region if none has);
/// 4. `home` over its limit rather than a refusal.
///
/// Ties go to the smaller id, so nodes deciding at once agree. `None` when no node is live.
pub fn serve<'a>(
    nodes: &'a [NodeInfo],
    home: &str,
    serving: &[String],
    region: &str,
    full: usize,
) -> Option<&'a NodeInfo> {
    let fits = |n: &&NodeInfo| n.load.participants < full;
    let by_load =
        |a: &&NodeInfo, b: &&NodeInfo| a.load.score().total_cmp(&b.load.score()).then_with(|| a.id.cmp(&b.id));
    let in_region = nodes.iter().any(|n| n.region == region);
    let home_node = nodes.iter().find(|n| n.id == home);
    if let Some(h) = home_node.filter(fits) {
        if h.region == region || !in_region {
            return Some(h);
        }
    }
    let regional = |n: &&NodeInfo| n.region == region || !in_region;
    if let Some(n) = nodes.iter().filter(|n| serving.contains(&n.id)).filter(regional).filter(fits).min_by(by_load) {
        return Some(n);
    }
    if let Some(n) = nodes.iter().filter(regional).filter(fits).min_by(by_load) {
        return Some(n);
    }
    if let Some(n) = nodes.iter().filter(fits).min_by(by_load) {
        return Some(n);
    }
    home_node.or_else(|| nodes.iter().min_by(by_load))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::registry::NodeLoad;

    fn node(id: &str, region: &str, participants: usize) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            url: format!("ws://{id}/rtc"),
            region: region.into(),
            udp: String::new(),
            version: String::new(),
            started_ms: 0,
            heartbeat_ms: 0,
            load: NodeLoad { participants, ..NodeLoad::default() },
        }
    }

    fn pick(nodes: &[NodeInfo], me: &str, region: &str) -> Option<String> {
        choose(nodes, me, region).map(|n| n.id.clone())
    }

    #[test]
    fn the_least_loaded_node_of_the_region_wins() {
        let nodes = [node("a", "eu", 10), node("b", "eu", 3), node("c", "us", 0)];
        assert_eq!(pick(&nodes, "a", "eu").as_deref(), Some("b"), "c is idle but in another region");
        assert_eq!(pick(&nodes, "c", "us").as_deref(), Some("c"));
    }

    #[test]
    fn another_region_when_none_is_in_this_one() {
        let nodes = [node("a", "eu", 10), node("b", "eu", 3)];
        assert_eq!(pick(&nodes, "x", "ap").as_deref(), Some("b"));
        assert_eq!(pick(&[], "x", "ap"), None);
    }

    #[test]
    fn the_node_the_join_reached_keeps_it_when_nearly_as_idle() {
        let nodes = [node("a", "eu", 4), node("b", "eu", 3)];
        assert_eq!(pick(&nodes, "a", "eu").as_deref(), Some("a"), "one participant more is not worth a redirect");
        let nodes = [node("a", "eu", 9), node("b", "eu", 3)];
        assert_eq!(pick(&nodes, "a", "eu").as_deref(), Some("b"));
    }

    #[test]
    fn ties_go_to_the_smaller_id_whoever_decides() {
        let nodes = [node("b", "eu", 0), node("a", "eu", 0), node("c", "eu", 0)];
        assert_eq!(pick(&nodes, "x", "eu").as_deref(), Some("a"));
        assert_eq!(pick(&nodes, "c", "eu").as_deref(), Some("c"), "equal load: stay");
    }

    #[test]
    fn a_burst_of_new_rooms_spreads_when_each_counts_on_its_node() {
        let mut nodes = vec![node("a", "eu", 0), node("b", "eu", 0), node("c", "eu", 0)];
        let mut placed = Vec::new();
        for _ in 0..6 {
            let id = pick(&nodes, "a", "eu").unwrap();
            nodes.iter_mut().find(|n| n.id == id).unwrap().load.participants += NEW_ROOM_WEIGHT;
            placed.push(id);
        }
        assert_eq!(placed, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn cpu_counts_more_than_a_few_participants() {
        let mut busy = node("a", "eu", 0);
        busy.load.cpu = 0.9;
        let nodes = [busy, node("b", "eu", 20)];
        assert_eq!(pick(&nodes, "x", "eu").as_deref(), Some("b"));
    }

    fn serving(nodes: &[NodeInfo], home: &str, serving: &[&str], region: &str) -> Option<String> {
        let serving: Vec<String> = serving.iter().map(|s| s.to_string()).collect();
        serve(nodes, home, &serving, region, 100).map(|n| n.id.clone())
    }

    #[test]
    fn a_room_stays_on_its_node_while_it_fits() {
        let nodes = [node("a", "eu", 60), node("b", "eu", 0), node("c", "eu", 0)];
        assert_eq!(serving(&nodes, "a", &[], "eu").as_deref(), Some("a"), "b is idler, but nothing should cross");
    }

    #[test]
    fn a_full_home_spills_to_a_node_already_serving_the_room() {
        let nodes = [node("a", "eu", 100), node("b", "eu", 50), node("c", "eu", 10)];
        assert_eq!(serving(&nodes, "a", &["b"], "eu").as_deref(), Some("b"), "b has the relays already");
        assert_eq!(serving(&nodes, "a", &[], "eu").as_deref(), Some("c"), "else the least loaded");
        let busy = [node("a", "eu", 100), node("b", "eu", 100)];
        assert_eq!(serving(&busy, "a", &["b"], "eu").as_deref(), Some("a"), "all full: home, over its limit");
    }

    #[test]
    fn a_joiner_from_another_region_is_served_in_its_region() {
        let nodes = [node("a", "eu", 0), node("b", "us", 30), node("c", "us", 20), node("d", "us", 5)];
        assert_eq!(serving(&nodes, "a", &["b"], "us").as_deref(), Some("b"), "a us node serving the room");
        assert_eq!(serving(&nodes, "a", &[], "us").as_deref(), Some("d"));
        assert_eq!(serving(&nodes, "a", &[], "ap").as_deref(), Some("a"), "no node in ap: stay home");
        assert_eq!(serving(&[], "a", &[], "eu"), None);
    }
}
