//! `web-demo/protocol.d.ts` is what `courier_protocol::ts::declarations()` generates from the wire types: the JS
//! client's types come from the same source as the server's. Run with `--features ts`; with
//! `UPDATE_PROTOCOL_DTS=1` it rewrites the file instead of failing.
#![cfg(feature = "ts")]

use std::path::Path;

use courier_protocol::ts::{declarations, DTS_PATH, REGENERATE};

#[test]
fn protocol_d_ts_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(DTS_PATH);
    let want = declarations();
    if std::env::var_os("UPDATE_PROTOCOL_DTS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(have.lines().count().min(want.lines().count()));
        panic!(
            "{DTS_PATH} is not what the types of courier-protocol generate (first difference at line {}).\n\
             Regenerate it from the repository root with:\n  {REGENERATE}\n\
             then run `npm run typecheck` in web-demo and commit the file.",
            line + 1
        );
    }
}
