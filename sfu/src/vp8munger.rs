//! VP8 picture id and TL0PICIDX rewriting for one down-track.
//!
//! A VP8 receiver tracks frame continuity by the payload descriptor's picture id (7 or 15 bits) and, with temporal
//! layers, by TL0PICIDX (8 bits). Each simulcast layer of a publisher numbers its own frames, so when a down-track
//! switches layers the subscriber would see the numbering jump and take frames for lost. The [`Vp8Munger`] keeps
//! both fields continuous: values pass through unchanged until the first switch ([`Vp8Munger::rebase`]); from
//! then on each field is offset so the new source continues right after the last value sent.
//!
//! It only computes values; the bytes are rewritten by str0m at serialisation (`RtpWrite::vp8_patch`), so the
//! shared payload is never copied per subscriber.

/// Outgoing descriptor values for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Out {
    /// Picture id to write (same width as the incoming one).
    pub picture_id: Option<u16>,
    /// TL0PICIDX to write.
    pub tl0_pic_idx: Option<u8>,
    /// Do the values differ from the incoming ones (is a patch needed at all)?
    pub changed: bool,
}

/// See the module doc.
#[derive(Debug, Clone, Default)]
pub struct Vp8Munger {
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: Option<(u16, bool)>,
    last_tl0: Option<u8>,
    rebase_pending: bool,
}

fn modulus(wide: bool) -> u16 {
    if wide {
        1 << 15
    } else {
        1 << 7
    }
}

impl Vp8Munger {
    /// A munger that passes values through until the first rebase.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next packet starts a frame from another source numbering: continue after the last values sent.
    pub fn rebase(&mut self) {
        self.rebase_pending = true;
    }

    /// Map one packet's descriptor values. `picture_id` is `(value, is_15_bit)`.
    pub fn map(&mut self, picture_id: Option<(u16, bool)>, tl0_pic_idx: Option<u8>) -> Vp8Out {
        if self.rebase_pending {
            self.rebase_pending = false;
            if let (Some((pid, wide)), Some((last, _))) = (picture_id, self.last_pid) {
                let m = modulus(wide);
                let want = (last + 1) % m;
                self.pid_offset = (want + m - pid % m) % m;
            }
            if let (Some(t), Some(last)) = (tl0_pic_idx, self.last_tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(t);
            }
        }
        let pid_out = picture_id.map(|(pid, wide)| {
            let m = modulus(wide);
            ((pid % m + self.pid_offset % m) % m, wide)
        });
        let tl0_out = tl0_pic_idx.map(|t| t.wrapping_add(self.tl0_offset));
        // Remember the newest values (picture ids only move forward, modulo wrap).
        if let Some((p, wide)) = pid_out {
            let newer = match self.last_pid {
                None => true,
                Some((last, _)) => {
                    let m = modulus(wide);
                    let d = (p + m - last % m) % m;
                    d != 0 && d < m / 2
                }
            };
            if newer {
                self.last_pid = Some((p, wide));
            }
        }
        if let Some(t) = tl0_out {
            let newer = self.last_tl0.is_none_or(|last| {
                let d = t.wrapping_sub(last);
                d != 0 && d < 128
            });
            if newer {
                self.last_tl0 = Some(t);
            }
        }
        Vp8Out {
            picture_id: pid_out.map(|(p, _)| p),
            tl0_pic_idx: tl0_out,
            changed: pid_out.map(|(p, _)| p) != picture_id.map(|(p, _)| p) || tl0_out != tl0_pic_idx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_through_until_rebase() {
        let mut m = Vp8Munger::new();
        for (pid, tl0) in [(100, 5), (100, 5), (101, 6), (32767, 7), (0, 8)] {
            let o = m.map(Some((pid, true)), Some(tl0));
            assert_eq!((o.picture_id, o.tl0_pic_idx, o.changed), (Some(pid), Some(tl0), false));
        }
    }

    #[test]
    fn rebase_table() {
        // (last sent before the switch, first of the new source, second of the new source) → expected outputs
        struct Case {
            name: &'static str,
            wide: bool,
            before: (u16, u8),
            new: [(u16, u8); 2],
            want: [(u16, u8); 2],
        }
        let cases = [
            Case {
                name: "15-bit",
                wide: true,
                before: (500, 10),
                new: [(9000, 200), (9001, 201)],
                want: [(501, 11), (502, 12)],
            },
            Case {
                name: "15-bit wrap",
                wide: true,
                before: (32767, 255),
                new: [(3, 40), (4, 41)],
                want: [(0, 0), (1, 1)],
            },
            Case {
                name: "new source wraps",
                wide: true,
                before: (10, 1),
                new: [(32767, 9), (0, 10)],
                want: [(11, 2), (12, 3)],
            },
            Case { name: "7-bit", wide: false, before: (127, 3), new: [(50, 100), (51, 101)], want: [(0, 4), (1, 5)] },
        ];
        for c in cases {
            let mut m = Vp8Munger::new();
            m.map(Some((c.before.0, c.wide)), Some(c.before.1));
            m.rebase();
            for (input, want) in c.new.iter().zip(c.want.iter()) {
                let o = m.map(Some((input.0, c.wide)), Some(input.1));
                assert_eq!((o.picture_id, o.tl0_pic_idx), (Some(want.0), Some(want.1)), "{}", c.name);
                assert!(o.changed, "{}", c.name);
            }
        }
    }

    #[test]
    fn packets_of_one_frame_and_reordering_keep_their_values() {
        let mut m = Vp8Munger::new();
        m.map(Some((7, true)), Some(1));
        m.rebase();
        // Three packets of the first frame of the new source share one picture id.
        for _ in 0..3 {
            assert_eq!(m.map(Some((300, true)), Some(50)).picture_id, Some(8));
        }
        assert_eq!(m.map(Some((302, true)), Some(51)).picture_id, Some(10));
        // A late packet of frame 301 still maps into place and does not move "last" backwards.
        assert_eq!(m.map(Some((301, true)), Some(51)).picture_id, Some(9));
        m.rebase();
        assert_eq!(m.map(Some((5, true)), Some(0)).picture_id, Some(11));
    }

    #[test]
    fn missing_fields_stay_missing() {
        let mut m = Vp8Munger::new();
        let o = m.map(None, None);
        assert_eq!(o, Vp8Out { picture_id: None, tl0_pic_idx: None, changed: false });
        m.rebase();
        let o = m.map(Some((9, true)), None);
        assert_eq!(o.picture_id, Some(9), "nothing to continue from: pass through");
    }
}
