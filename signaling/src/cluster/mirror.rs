//! A room's members on other nodes, as this node sees them (sans-I/O; groundwork of issue 19, rooms that span
//! nodes).
//!
//! When a room spans nodes, every node that serves one of its members must know the members and tracks of the
//! others, to tell its own members (`participant_joined`, `track_published`, …) and to subscribe them to remote
//! tracks. Each serving node publishes the changes of its own part of the room with a sequence number per
//! (room, node), starting at 1; a [`RoomMirror`] per room applies each node's changes in that order. A change that
//! skips a number (pub/sub lost one) or a node heard of for the first time mid-stream makes the mirror ask for that
//! node's snapshot ([`Step::Resync`]); changes that arrive meanwhile are held (at most [`HELD_MAX`]) and applied
//! after it. What comes out is what local members must hear, so a lost or repeated change never shows twice nor
//! goes missing: the snapshot is compared with what was shown.

use std::collections::{BTreeMap, HashMap};

use courier_protocol::ParticipantInfo;

/// Changes held per node while its snapshot is awaited; beyond, the oldest are dropped (the snapshot repairs).
pub const HELD_MAX: usize = 1024;

/// One change of a node's part of a room, as published and as shown to local members.
pub use crate::room::MemberChange as Change;

/// What the shell does after an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Tell local members these changes, in order.
    Show(Vec<Change>),
    /// Ask `node` for its part of the room ([`RoomMirror::on_snapshot`] takes the answer); show these first.
    Resync { node: String, show: Vec<Change> },
}

#[derive(Debug, Default)]
struct Part {
    /// The last change applied (`None`: none yet, a snapshot is needed unless the next is number 1).
    seq: Option<u64>,
    members: BTreeMap<String, ParticipantInfo>,
    /// Awaiting a snapshot; changes held meanwhile.
    resyncing: bool,
    held: BTreeMap<u64, Change>,
}

/// The other nodes' parts of one room. See the module doc.
#[derive(Debug, Default)]
pub struct RoomMirror {
    parts: HashMap<String, Part>,
}

impl RoomMirror {
    pub fn new() -> RoomMirror {
        RoomMirror::default()
    }

    /// Every remote member, by node then participant id.
    pub fn members(&self) -> Vec<(&str, &ParticipantInfo)> {
        let mut all: Vec<(&str, &ParticipantInfo)> =
            self.parts.iter().flat_map(|(n, p)| p.members.values().map(move |m| (n.as_str(), m))).collect();
        all.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        all
    }

    /// Change number `seq` of `node`'s part.
    pub fn on_change(&mut self, node: &str, seq: u64, change: Change) -> Step {
        let part = self.parts.entry(node.to_string()).or_default();
        if part.resyncing {
            part.held.insert(seq, change);
            while part.held.len() > HELD_MAX {
                part.held.pop_first();
            }
            return Step::Show(Vec::new());
        }
        let next = part.seq.map_or(1, |s| s + 1);
        if part.seq.is_some_and(|s| seq <= s) {
            return Step::Show(Vec::new()); // a repeat
        }
        if seq != next {
            part.resyncing = true;
            part.held.insert(seq, change);
            return Step::Resync { node: node.to_string(), show: Vec::new() };
        }
        part.seq = Some(seq);
        Step::Show(apply(&mut part.members, change))
    }

    /// `node`'s part as of its change number `seq` (its snapshot): shows the difference with what was shown, then
    /// the held changes after `seq`.
    pub fn on_snapshot(&mut self, node: &str, seq: u64, members: Vec<ParticipantInfo>) -> Step {
        let part = self.parts.entry(node.to_string()).or_default();
        if !part.resyncing && part.seq.is_some_and(|s| seq < s) {
            // Older than what was applied already (a snapshot asked for by another node, delayed): nothing new.
            return Step::Show(Vec::new());
        }
        let new: BTreeMap<String, ParticipantInfo> = members.into_iter().map(|m| (m.id.clone(), m)).collect();
        let mut show = diff(&part.members, &new);
        part.members = new;
        part.seq = Some(seq);
        part.resyncing = false;
        let mut held = std::mem::take(&mut part.held).into_iter().filter(|(s, _)| *s > seq);
        while let Some((s, change)) = held.next() {
            match self.on_change(node, s, change) {
                Step::Show(more) => show.extend(more),
                Step::Resync { node, .. } => {
                    // Still a gap after the snapshot: the rest waits for the next one.
                    self.parts.entry(node.clone()).or_default().held.extend(held);
                    return Step::Resync { node, show };
                }
            }
        }
        Step::Show(show)
    }

    /// `node` is gone (left the registry): its members leave.
    pub fn node_gone(&mut self, node: &str) -> Vec<Change> {
        let Some(part) = self.parts.remove(node) else { return Vec::new() };
        part.members.into_keys().map(|participant| Change::Left { participant }).collect()
    }
}

/// Apply one change to a part; what local members must hear (nothing for a change that changes nothing).
pub fn apply(members: &mut BTreeMap<String, ParticipantInfo>, change: Change) -> Vec<Change> {
    match change {
        Change::Joined(info) | Change::Updated(info) => {
            let shown = match members.get(&info.id) {
                None => vec![Change::Joined(info.clone())],
                Some(old) => diff_member(old, &info),
            };
            members.insert(info.id.clone(), info);
            shown
        }
        Change::Left { participant } => match members.remove(&participant) {
            Some(_) => vec![Change::Left { participant }],
            None => Vec::new(),
        },
        Change::Published { participant, track } => match members.get_mut(&participant) {
            Some(m) if !m.tracks.iter().any(|t| t.id == track.id) => {
                m.tracks.push(track.clone());
                vec![Change::Published { participant, track }]
            }
            _ => Vec::new(),
        },
        Change::Unpublished { participant, track } => match members.get_mut(&participant) {
            Some(m) if m.tracks.iter().any(|t| t.id == track) => {
                m.tracks.retain(|t| t.id != track);
                vec![Change::Unpublished { participant, track }]
            }
            _ => Vec::new(),
        },
    }
}

/// The changes that take `old` to `new`.
fn diff(old: &BTreeMap<String, ParticipantInfo>, new: &BTreeMap<String, ParticipantInfo>) -> Vec<Change> {
    let mut out: Vec<Change> =
        old.keys().filter(|id| !new.contains_key(*id)).map(|id| Change::Left { participant: id.clone() }).collect();
    for (id, m) in new {
        match old.get(id) {
            None => out.push(Change::Joined(m.clone())),
            Some(o) => out.extend(diff_member(o, m)),
        }
    }
    out
}

fn diff_member(old: &ParticipantInfo, new: &ParticipantInfo) -> Vec<Change> {
    let mut out = Vec::new();
    if (&old.name, &old.metadata, &old.identity) != (&new.name, &new.metadata, &new.identity) {
        out.push(Change::Updated(new.clone()));
    }
    for t in &old.tracks {
        if !new.tracks.iter().any(|n| n.id == t.id) {
            out.push(Change::Unpublished { participant: new.id.clone(), track: t.id.clone() });
        }
    }
    for t in &new.tracks {
        if !old.tracks.iter().any(|o| o.id == t.id) {
            out.push(Change::Published { participant: new.id.clone(), track: t.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_protocol::TrackInfo;
    use courier_protocol::{MediaKind, TrackSource};

    fn member(id: &str, tracks: &[&str]) -> ParticipantInfo {
        ParticipantInfo {
            id: id.into(),
            identity: format!("who-{id}"),
            name: String::new(),
            tracks: tracks.iter().map(|t| track(t)).collect(),
            metadata: String::new(),
            node: String::new(),
            region: String::new(),
        }
    }

    fn track(id: &str) -> TrackInfo {
        TrackInfo {
            id: id.into(),
            kind: MediaKind::Video,
            source: TrackSource::Camera,
            name: String::new(),
            muted: false,
            mid: None,
        }
    }

    fn shown(step: Step) -> Vec<Change> {
        match step {
            Step::Show(c) => c,
            other => panic!("expected changes to show, got {other:?}"),
        }
    }

    #[test]
    fn changes_in_order_are_shown_once() {
        let mut m = RoomMirror::new();
        assert_eq!(
            shown(m.on_change("b", 1, Change::Joined(member("PA_1", &[])))),
            vec![Change::Joined(member("PA_1", &[]))]
        );
        let publish = Change::Published { participant: "PA_1".into(), track: track("TR_1") };
        assert_eq!(shown(m.on_change("b", 2, publish.clone())), vec![publish.clone()]);
        assert_eq!(shown(m.on_change("b", 2, publish)), vec![], "a repeat shows nothing");
        assert_eq!(m.members(), vec![("b", &member("PA_1", &["TR_1"]))]);
        let left = Change::Left { participant: "PA_1".into() };
        assert_eq!(shown(m.on_change("b", 3, left.clone())), vec![left]);
        assert!(m.members().is_empty());
        // A snapshot older than what was applied (asked for by another node, delayed) changes nothing.
        assert_eq!(shown(m.on_snapshot("b", 2, vec![member("PA_1", &["TR_1"])])), vec![]);
        assert!(m.members().is_empty());
    }

    #[test]
    fn a_gap_asks_for_a_snapshot_and_shows_only_the_difference() {
        let mut m = RoomMirror::new();
        shown(m.on_change("b", 1, Change::Joined(member("PA_1", &["TR_1"]))));
        shown(m.on_change("b", 2, Change::Joined(member("PA_2", &[]))));
        // 3 (PA_1 unpublished TR_1) and 4 (PA_3 joined) were lost; 5 arrives.
        let step = m.on_change("b", 5, Change::Published { participant: "PA_2".into(), track: track("TR_2") });
        assert_eq!(step, Step::Resync { node: "b".into(), show: vec![] });
        // 6 arrives while the snapshot is on its way: held.
        assert_eq!(shown(m.on_change("b", 6, Change::Left { participant: "PA_1".into() })), vec![]);
        // The snapshot as of 4: the lost changes show, then 5 and 6 (held) apply.
        let step = m.on_snapshot("b", 4, vec![member("PA_1", &[]), member("PA_2", &[]), member("PA_3", &[])]);
        assert_eq!(
            shown(step),
            vec![
                Change::Unpublished { participant: "PA_1".into(), track: "TR_1".into() },
                Change::Joined(member("PA_3", &[])),
                Change::Published { participant: "PA_2".into(), track: track("TR_2") },
                Change::Left { participant: "PA_1".into() },
            ]
        );
        assert_eq!(m.members(), vec![("b", &member("PA_2", &["TR_2"])), ("b", &member("PA_3", &[]))]);
    }

    #[test]
    fn a_gap_left_after_the_snapshot_asks_again_and_keeps_what_is_held() {
        let mut m = RoomMirror::new();
        assert!(matches!(m.on_change("b", 3, Change::Joined(member("PA_3", &[]))), Step::Resync { .. }));
        shown(m.on_change("b", 5, Change::Joined(member("PA_5", &[]))));
        shown(m.on_change("b", 6, Change::Joined(member("PA_6", &[]))));
        // The snapshot is as of 3: 4 is still missing, so 5 and 6 wait for the next snapshot.
        let step = m.on_snapshot("b", 3, vec![member("PA_3", &[])]);
        assert_eq!(step, Step::Resync { node: "b".into(), show: vec![Change::Joined(member("PA_3", &[]))] });
        let step = m.on_snapshot("b", 4, vec![member("PA_3", &[]), member("PA_4", &[])]);
        assert_eq!(
            shown(step),
            vec![
                Change::Joined(member("PA_4", &[])),
                Change::Joined(member("PA_5", &[])),
                Change::Joined(member("PA_6", &[]))
            ]
        );
    }

    #[test]
    fn a_node_first_heard_mid_stream_is_resynced() {
        let mut m = RoomMirror::new();
        let step = m.on_change("c", 17, Change::Left { participant: "PA_9".into() });
        assert_eq!(step, Step::Resync { node: "c".into(), show: vec![] });
        assert_eq!(shown(m.on_snapshot("c", 17, vec![member("PA_8", &[])])), vec![Change::Joined(member("PA_8", &[]))]);
        assert_eq!(
            shown(m.on_change("c", 18, Change::Updated(ParticipantInfo { name: "Eve".into(), ..member("PA_8", &[]) })))
                .len(),
            1
        );
    }

    #[test]
    fn a_gone_nodes_members_leave() {
        let mut m = RoomMirror::new();
        shown(m.on_change("b", 1, Change::Joined(member("PA_1", &[]))));
        shown(m.on_change("c", 1, Change::Joined(member("PA_2", &[]))));
        assert_eq!(m.node_gone("b"), vec![Change::Left { participant: "PA_1".into() }]);
        assert_eq!(m.node_gone("b"), vec![]);
        assert_eq!(m.members(), vec![("c", &member("PA_2", &[]))]);
    }
}
