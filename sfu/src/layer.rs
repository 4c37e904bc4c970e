//! Simulcast layers of a published video track: which one a packet belongs to, and which are live.
//!
//! A simulcast publisher sends up to three encodings of one camera (spatial layers), each its own RTP stream
//! named by a RID. The engine numbers them 0 (lowest) to 2 (highest): by the conventional names (`q`/`h`/`f`,
//! `l`/`m`/`h`... see [`spatial_of`]) or else by their order in the publisher's SDP, which lists the lowest first
//! by convention. A [`LayerTracker`] remembers when each layer last carried media, so a down-track never waits
//! for a layer the publisher has stopped (Chrome pauses its upper layers when its uplink is short).

use std::time::{Duration, Instant};

/// Highest spatial layer index (three layers).
pub const MAX_SPATIAL: u8 = 2;

/// A layer that carried no media for this long is considered stopped.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);

/// Spatial index of `rid`, given the simulcast RIDs in SDP order (lowest first).
pub fn spatial_of(rid: &str, sdp_order: &[String]) -> u8 {
    match rid {
        "q" | "l" | "low" | "0" => 0,
        "h" if sdp_order.len() <= 2 || sdp_order.iter().any(|r| r == "q") => 1,
        "m" | "mid" | "1" => 1,
        "f" | "high" | "2" => 2,
        "h" => 2, // l/m/h naming
        _ => sdp_order.iter().position(|r| r == rid).map_or(0, |i| (i as u8).min(MAX_SPATIAL)),
    }
}

/// How long a rate measurement window lasts.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);

/// Liveness, bitrate and frame rate of the spatial layers of one track (liveness as a bitmask: bit `i` = layer
/// `i` live). The stream allocator prices each layer by its measured bitrate.
#[derive(Debug, Clone, Default)]
pub struct LayerTracker {
    last_seen: [Option<Instant>; 3],
    rates: [RateMeter; 3],
}

/// Bitrate and frame rate of one layer: bytes and frames counted over [`RATE_WINDOW`], smoothed over windows
/// (keyframes make single windows spiky).
#[derive(Debug, Clone, Copy, Default)]
struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    frames: u32,
    bps: f64,
    fps: f64,
}

impl RateMeter {
    fn on_packet(&mut self, now: Instant, bytes: usize, end_of_frame: bool) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let secs = elapsed.as_secs_f64();
            let (bps, fps) = (self.bytes as f64 * 8.0 / secs, f64::from(self.frames) / secs);
            // The first full window is taken as is; after that, a moving average with weight 1/2 (a 1 s memory).
            if self.bps == 0.0 {
                (self.bps, self.fps) = (bps, fps);
            } else {
                self.bps = (self.bps + bps) / 2.0;
                self.fps = (self.fps + fps) / 2.0;
            }
            self.window_start = Some(now);
            self.bytes = 0;
            self.frames = 0;
        }
        self.bytes += bytes as u64;
        self.frames += u32::from(end_of_frame);
    }
}

impl LayerTracker {
    /// A packet of `layer` arrived at `now`.
    pub fn on_packet(&mut self, layer: u8, now: Instant) {
        if let Some(slot) = self.last_seen.get_mut(usize::from(layer)) {
            *slot = Some(now);
        }
    }

    /// A packet of `layer` arrived at `now`, with `bytes` of payload; `end_of_frame` is its marker bit.
    pub fn on_media(&mut self, layer: u8, now: Instant, bytes: usize, end_of_frame: bool) {
        self.on_packet(layer, now);
        if let Some(r) = self.rates.get_mut(usize::from(layer)) {
            r.on_packet(now, bytes, end_of_frame);
        }
    }

    /// Measured bitrate of each layer in bits per second; 0 for a layer that is not live or not measured yet.
    pub fn bitrates(&self, now: Instant) -> [u32; 3] {
        let live = self.live_mask(now);
        std::array::from_fn(|l| if live & (1 << l) != 0 { self.rates[l].bps as u32 } else { 0 })
    }

    /// Measured frame rate of `layer` (frames per second).
    pub fn frame_rate(&self, layer: u8) -> f64 {
        self.rates.get(usize::from(layer)).map_or(0.0, |r| r.fps)
    }

    /// Layers that carried media within [`LAYER_TIMEOUT`] of `now`.
    pub fn live_mask(&self, now: Instant) -> u8 {
        let mut mask = 0;
        for (i, seen) in self.last_seen.iter().enumerate() {
            if seen.is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT) {
                mask |= 1 << i;
            }
        }
        mask
    }
}

/// The layer to forward: the highest live layer not above `max`, or, when none is that low, the lowest live one.
/// `None` when no layer is live.
pub fn select(live_mask: u8, max: u8) -> Option<u8> {
    let live = |l: u8| live_mask & (1 << l) != 0;
    (0..=max.min(MAX_SPATIAL)).rev().find(|l| live(*l)).or_else(|| (0..=MAX_SPATIAL).find(|l| live(*l)))
}

/// Known frame sizes of the spatial layers (from their keyframes).
pub type LayerSizes = [Option<(u16, u16)>; 3];

/// The lowest layer that covers a `want` = (width, height) render size: both dimensions at least as large. A
/// layer whose size is not known yet is estimated from a known one (each layer twice the previous, the usual
/// simulcast ladder); with nothing known, the top layer is taken as 1280×720. `None` means no layer is big enough
/// to cover it: the top layer.
pub fn layer_for_size(sizes: &LayerSizes, want: (u16, u16)) -> u8 {
    let known = (0..3).rev().find_map(|l: usize| sizes[l].map(|s| (l, s)));
    let size_of = |l: usize| -> (u32, u32) {
        if let Some((w, h)) = sizes[l] {
            return (u32::from(w), u32::from(h));
        }
        let (kl, (kw, kh)) = known.unwrap_or((2, (1280, 720)));
        let (w, h) = (u32::from(kw), u32::from(kh));
        if l >= kl {
            (w << (l - kl), h << (l - kl))
        } else {
            (w >> (kl - l), h >> (kl - l))
        }
    };
    (0..=MAX_SPATIAL)
        .find(|l| {
            let (w, h) = size_of(usize::from(*l));
            w >= u32::from(want.0) && h >= u32::from(want.1)
        })
        .unwrap_or(MAX_SPATIAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spatial_table() {
        let qhf: Vec<String> = ["q", "h", "f"].map(String::from).to_vec();
        let lmh: Vec<String> = ["l", "m", "h"].map(String::from).to_vec();
        let custom: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let cases: &[(&str, &[String], u8)] = &[
            ("q", &qhf, 0),
            ("h", &qhf, 1),
            ("f", &qhf, 2),
            ("l", &lmh, 0),
            ("m", &lmh, 1),
            ("h", &lmh, 2),
            ("0", &[], 0),
            ("2", &[], 2),
            ("a", &custom, 0),
            ("c", &custom, 2),
            ("zzz", &custom, 0),
        ];
        for (rid, order, want) in cases {
            assert_eq!(spatial_of(rid, order), *want, "{rid} in {order:?}");
        }
    }

    #[test]
    fn liveness_times_out() {
        let t0 = Instant::now();
        let mut t = LayerTracker::default();
        assert_eq!(t.live_mask(t0), 0);
        t.on_packet(0, t0);
        t.on_packet(2, t0 + Duration::from_millis(500));
        t.on_packet(7, t0); // out of range: ignored
        assert_eq!(t.live_mask(t0 + Duration::from_millis(600)), 0b101);
        assert_eq!(t.live_mask(t0 + Duration::from_millis(1600)), 0b100, "layer 0 stopped");
        assert_eq!(t.live_mask(t0 + Duration::from_secs(3)), 0);
    }

    #[test]
    fn rates_are_measured_per_layer() {
        let t0 = Instant::now();
        let mut t = LayerTracker::default();
        // Layer 0: 30 frames/s of 2 packets of 500 bytes (240 kbit/s); layer 2: 30 frames/s of 1 packet of 4000
        // bytes (960 kbit/s). Two seconds, in 1/60 s steps.
        for i in 0..120u32 {
            let now = t0 + Duration::from_secs(1) * i / 60;
            if i % 2 == 0 {
                t.on_media(0, now, 500, false);
                t.on_media(2, now, 4000, true);
            } else {
                t.on_media(0, now, 500, true);
            }
        }
        let now = t0 + Duration::from_secs(2);
        let [b0, b1, b2] = t.bitrates(now);
        assert!((220_000..=260_000).contains(&b0), "layer 0 at {b0}");
        assert_eq!(b1, 0, "layer 1 never sent");
        assert!((880_000..=1_040_000).contains(&b2), "layer 2 at {b2}");
        assert!((28.0..=32.0).contains(&t.frame_rate(0)), "fps {}", t.frame_rate(0));
        assert_eq!(t.bitrates(now + Duration::from_secs(2)), [0, 0, 0], "stopped layers cost nothing");
    }

    #[test]
    fn size_table() {
        let ladder: LayerSizes = [Some((320, 180)), Some((640, 360)), Some((1280, 720))];
        let top_only: LayerSizes = [None, None, Some((1920, 1080))];
        let none: LayerSizes = [None, None, None];
        let cases: &[(&LayerSizes, (u16, u16), u8)] = &[
            (&ladder, (320, 180), 0),
            (&ladder, (200, 100), 0),
            (&ladder, (321, 180), 1),
            (&ladder, (640, 360), 1),
            (&ladder, (1280, 720), 2),
            (&ladder, (3840, 2160), 2),
            (&top_only, (480, 270), 0),
            (&top_only, (481, 270), 1),
            (&none, (320, 180), 0),
            (&none, (400, 200), 1),
        ];
        for (sizes, want, layer) in cases {
            assert_eq!(layer_for_size(sizes, *want), *layer, "{sizes:?} for {want:?}");
        }
    }

    #[test]
    fn select_table() {
        let cases: &[(u8, u8, Option<u8>)] = &[
            (0b111, 2, Some(2)),
            (0b111, 1, Some(1)),
            (0b111, 0, Some(0)),
            (0b011, 2, Some(1)), // top layer paused: next one down
            (0b100, 0, Some(2)), // only the top layer live: better than nothing
            (0b101, 1, Some(0)),
            (0b000, 2, None),
            (0b001, 9, Some(0)),
        ];
        for (mask, max, want) in cases {
            assert_eq!(select(*mask, *max), *want, "mask {mask:03b} max {max}");
        }
    }
}
