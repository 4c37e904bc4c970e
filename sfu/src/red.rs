//! RFC 2198 redundant audio (RED) as the forwarding path needs it: check a publisher's RED payload, take out its
//! primary block for a subscriber that did not negotiate RED, and rewrite the block payload types for a subscriber
//! whose Opus payload type differs from the publisher's.
//!
//! A RED payload is a chain of block headers followed by the block data in the same order:
//!
//! ```text
//! redundant header (4 bytes): |1| PT (7) | timestamp offset (14) | length (10) |
//! primary header   (1 byte):  |0| PT (7) |
//! data: redundant blocks (oldest first), then the primary block (the rest of the payload)
//! ```
//!
//! Chrome sends Opus in RED with one redundant block (the previous frame), every block of the same Opus payload
//! type. The payload comes from a publisher and is hostile until [`parse`] accepted it: every function here
//! returns `None` on anything malformed and never panics, and none allocates except to return a rewritten copy.
//! Unlike str0m's own `RedDecoder` (used in its frame mode), nothing here keeps a list of blocks: forwarding only
//! needs where the primary starts and which payload types the headers name.

/// At most this many redundant blocks are accepted (libwebrtc's receiver also stops at 32). It bounds the work a
/// hostile payload can cause; real senders use one or two.
pub const MAX_REDUNDANT_BLOCKS: usize = 32;

/// What [`parse`] learned about a well-formed RED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedLayout {
    /// Payload type of the primary block.
    pub primary_pt: u8,
    /// Where the primary block's data starts; it runs to the end of the payload.
    pub primary_offset: usize,
    /// How many redundant blocks precede it.
    pub redundant: usize,
    /// Do all blocks, redundant and primary, carry the primary's payload type?
    pub same_pt: bool,
}

/// Check a RED payload: the header chain ends (an F=0 header) within [`MAX_REDUNDANT_BLOCKS`] redundant headers,
/// and the redundant blocks' lengths fit in the payload. `None` when malformed.
pub fn parse(payload: &[u8]) -> Option<RedLayout> {
    let mut i = 0;
    let mut data_len = 0usize;
    let mut redundant = 0;
    let mut pts_seen: Option<u8> = None;
    let mut same_pt = true;
    loop {
        let first = *payload.get(i)?;
        let pt = first & 0x7f;
        if pts_seen.is_some_and(|p| p != pt) {
            same_pt = false;
        }
        pts_seen = Some(pt);
        if first & 0x80 == 0 {
            let primary_offset = (i + 1).checked_add(data_len)?;
            if primary_offset > payload.len() {
                return None;
            }
            return Some(RedLayout { primary_pt: pt, primary_offset, redundant, same_pt });
        }
        if redundant == MAX_REDUNDANT_BLOCKS {
            return None;
        }
        let h = payload.get(i..i + 4)?;
        data_len += (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        redundant += 1;
        i += 4;
    }
}

/// The primary block of a RED payload, if it is well formed and its payload type is `primary_pt` (the codec the
/// publisher negotiated RED for; a primary of another codec must not be relabelled as that one).
pub fn primary(payload: &[u8], primary_pt: u8) -> Option<&[u8]> {
    let l = parse(payload)?;
    (l.primary_pt == primary_pt).then(|| &payload[l.primary_offset..])
}

/// A copy of a RED payload whose blocks, all of payload type `from`, are relabelled `to` (a subscriber that
/// negotiated Opus under another payload type). `None` when malformed or when some block is not of type `from`.
pub fn rewrite_pt(payload: &[u8], from: u8, to: u8) -> Option<Vec<u8>> {
    let l = parse(payload)?;
    if !l.same_pt || l.primary_pt != from || to > 0x7f {
        return None;
    }
    let mut out = payload.to_vec();
    for b in 0..=l.redundant {
        let h = &mut out[b * 4];
        *h = (*h & 0x80) | to;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A redundant block header.
    fn red_hdr(pt: u8, ts_offset: u16, len: usize) -> [u8; 4] {
        [0x80 | pt, (ts_offset >> 6) as u8, ((ts_offset as u8 & 0x3f) << 2) | (len >> 8) as u8, len as u8]
    }

    /// One redundant block of Opus (PT 111) followed by the primary, as Chrome sends it.
    fn chrome_like() -> Vec<u8> {
        let mut p = red_hdr(111, 960, 3).to_vec();
        p.push(111);
        p.extend_from_slice(&[1, 2, 3]); // previous frame
        p.extend_from_slice(&[9, 8, 7, 6]); // this frame
        p
    }

    #[test]
    fn parse_table() {
        let long_block = {
            let mut p = red_hdr(111, 960, 0x3ff).to_vec();
            p.push(111);
            p.extend(std::iter::repeat_n(5, 0x3ff));
            p.push(42);
            p
        };
        let too_many = {
            let mut p = Vec::new();
            for _ in 0..=MAX_REDUNDANT_BLOCKS {
                p.extend_from_slice(&red_hdr(111, 960, 0));
            }
            p.push(111);
            p
        };
        let max_blocks = {
            let mut p = Vec::new();
            for _ in 0..MAX_REDUNDANT_BLOCKS {
                p.extend_from_slice(&red_hdr(111, 960, 0));
            }
            p.push(111);
            p.push(1);
            p
        };
        let mixed = {
            let mut p = red_hdr(0, 160, 1).to_vec();
            p.extend_from_slice(&[111, 0xaa, 0xbb]);
            p
        };
        let cases: Vec<(&str, Vec<u8>, Option<RedLayout>)> = vec![
            ("empty", vec![], None),
            (
                "primary only",
                vec![111, 1, 2],
                Some(RedLayout { primary_pt: 111, primary_offset: 1, redundant: 0, same_pt: true }),
            ),
            (
                "primary header, empty primary (DTX)",
                vec![111],
                Some(RedLayout { primary_pt: 111, primary_offset: 1, redundant: 0, same_pt: true }),
            ),
            (
                "one redundant block",
                chrome_like(),
                Some(RedLayout { primary_pt: 111, primary_offset: 8, redundant: 1, same_pt: true }),
            ),
            (
                "largest block length",
                long_block,
                Some(RedLayout { primary_pt: 111, primary_offset: 6 + 0x3ff - 1, redundant: 1, same_pt: true }),
            ),
            (
                "block of another codec",
                mixed,
                Some(RedLayout { primary_pt: 111, primary_offset: 6, redundant: 1, same_pt: false }),
            ),
            (
                "32 redundant blocks",
                max_blocks,
                Some(RedLayout { primary_pt: 111, primary_offset: 4 * 32 + 1, redundant: 32, same_pt: true }),
            ),
            ("33 redundant blocks", too_many, None),
            ("header chain never ends", red_hdr(111, 960, 0).repeat(3), None),
            ("truncated redundant header", vec![0x80 | 111, 0, 0], None),
            (
                "block longer than the payload",
                {
                    let mut p = red_hdr(111, 960, 10).to_vec();
                    p.extend_from_slice(&[111, 1, 2]);
                    p
                },
                None,
            ),
            (
                "block data reaches exactly the end: empty primary",
                {
                    let mut p = red_hdr(111, 960, 2).to_vec();
                    p.extend_from_slice(&[111, 1, 2]);
                    p
                },
                Some(RedLayout { primary_pt: 111, primary_offset: 7, redundant: 1, same_pt: true }),
            ),
        ];
        for (name, payload, want) in cases {
            assert_eq!(parse(&payload), want, "{name}");
        }
    }

    #[test]
    fn primary_and_rewrite() {
        let p = chrome_like();
        assert_eq!(primary(&p, 111), Some(&[9u8, 8, 7, 6][..]));
        assert_eq!(primary(&p, 109), None, "a primary of another payload type is not relabelled");
        assert_eq!(primary(&[0x80 | 111], 111), None);

        let r = rewrite_pt(&p, 111, 109).expect("well formed");
        assert_eq!(r[0], 0x80 | 109);
        assert_eq!(r[4], 109);
        assert_eq!(&r[1..4], &p[1..4], "offset and length untouched");
        assert_eq!(&r[5..], &p[5..], "data untouched");
        assert_eq!(parse(&r).map(|l| l.primary_pt), Some(109));
        assert_eq!(rewrite_pt(&p, 109, 111), None, "blocks are not of type `from`");
        assert_eq!(rewrite_pt(&p, 111, 200), None, "not a payload type");
        let mut mixed = red_hdr(0, 160, 1).to_vec();
        mixed.extend_from_slice(&[111, 0xaa, 0xbb]);
        assert_eq!(rewrite_pt(&mixed, 111, 109), None, "a block of another codec cannot be mapped");
    }

    /// Arbitrary bytes never panic, and whatever `parse` accepts is consistent (a stand-in for the fuzz target in
    /// `fuzz/fuzz_targets/red.rs`, run on every `cargo test`).
    #[test]
    fn arbitrary_payloads_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..20_000 {
            let len = n % 64;
            let mut p = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly header-looking bytes, so that long chains are tried too.
                p.push(if x & 1 == 0 { 0x80 | (x >> 8) as u8 } else { (x >> 16) as u8 });
            }
            if let Some(l) = parse(&p) {
                assert!(l.primary_offset <= p.len());
                assert!(l.redundant <= MAX_REDUNDANT_BLOCKS);
                assert_eq!(primary(&p, l.primary_pt).map(<[u8]>::len), Some(p.len() - l.primary_offset));
            }
            let _ = rewrite_pt(&p, 111, 63);
        }
    }
}
