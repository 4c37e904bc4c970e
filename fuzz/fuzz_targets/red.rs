//! The RED (RFC 2198) payload parser: every audio packet of a publisher that negotiated RED goes through
//! `sfu::red` before it is forwarded (stripped to its primary block, or relabelled for a subscriber). Malformed
//! payloads must come back as `None`, never panic, and whatever is accepted must be consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::red;

fuzz_target!(|data: &[u8]| {
    if let Some(l) = red::parse(data) {
        assert!(l.primary_offset <= data.len());
        assert!(l.redundant <= red::MAX_REDUNDANT_BLOCKS);
        assert_eq!(red::primary(data, l.primary_pt).map(<[u8]>::len), Some(data.len() - l.primary_offset));
        if l.same_pt {
            let r = red::rewrite_pt(data, l.primary_pt, 63).expect("same-PT payloads can be relabelled");
            assert_eq!(red::parse(&r).map(|m| (m.primary_offset, m.redundant)), Some((l.primary_offset, l.redundant)));
        }
    }
    let _ = red::rewrite_pt(data, 111, 109);
});
