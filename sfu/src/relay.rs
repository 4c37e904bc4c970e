//! Relays: how a track crosses from the node its publisher is on (the origin) to another Courier node (an edge)
//! that has subscribers of it, once per node pair however many subscribers the edge has.
//!
//! A relay is an ordinary WebRTC connection between the two engines, str0m on both ends:
//!
//! - **Origin side**: a [`crate::peer::Peer`] made with [`crate::peer::PeerConfig::relay`]. It runs full ICE
//!   (controlling; both engines are otherwise ICE-lite, and two lite ends never connect) from a UDP socket of its
//!   own, offers every relayed video track with three simulcast send layers ([`RIDS`]), and writes each packet it is
//!   given on the stream of its layer with the publisher's own sequence number and timestamp: no layer choice, no
//!   munging. Its streams keep a retransmission cache, so the edge's NACKs are answered here, and the edge's
//!   keyframe requests (per RID) go to the publisher like a local subscriber's.
//! - **Edge side**: an ordinary publisher peer of the edge's engine, which accepts the origin's offers. The relayed
//!   track is routed, allocated and munged per subscriber like a local publisher's, so layer choice, keyframe
//!   requests, NACK/RTX and pausing stay per link; its dynacast (which layers the edge's subscribers need) is what
//!   the edge tells the origin ([`crate::engine::Sfu::relay_demand`]), and a layer nobody there needs stops crossing.
//!
//! Which relays a node needs, with which layers, is [`crate::cascade::Demand`]'s to decide; setting them up between
//! nodes is the signaling layer's (requests over Redis).

use str0m::media::{Rid, Simulcast, SimulcastLayer};

/// The RIDs of a relayed video track's layers, lowest first: layer `i` travels as `RIDS[i]`, whatever its RID at
/// the publisher.
pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// The simulcast a relay offers for a video track: the three layers, sent.
pub fn simulcast() -> Simulcast {
    let mut s = Simulcast::new();
    s.send = RIDS.iter().map(|r| SimulcastLayer::new(r)).collect();
    s
}

/// The RID layer `layer` travels as.
pub fn rid_of(layer: u8) -> Rid {
    Rid::from(RIDS[usize::from(layer.min(crate::layer::MAX_SPATIAL))])
}

/// The layer a relay RID stands for (`None`: not one of [`RIDS`]).
pub fn layer_of(rid: &str) -> Option<u8> {
    RIDS.iter().position(|r| *r == rid).map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::spatial_of;

    #[test]
    fn the_edge_reads_the_relay_rids_as_the_layers_they_carry() {
        let sdp_order: Vec<String> = RIDS.iter().map(|r| r.to_string()).collect();
        for layer in 0..3u8 {
            let rid = rid_of(layer);
            assert_eq!(layer_of(&rid), Some(layer));
            assert_eq!(spatial_of(&rid, &sdp_order), layer, "the edge's peer numbers {rid} as layer {layer}");
        }
        assert_eq!(layer_of("x"), None);
        assert_eq!(simulcast().send.len(), 3);
    }
}
