//! The access-token parser: every join and every API request hands an untrusted string to `Keys`. Verifying must
//! refuse every input it cannot check with a `TokenError`, never panic. The key below signs the seed token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::auth::Keys;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let keys = Keys([("fuzzkey".to_string(), "fuzzsecret-0123456789".to_string())].into());
    let _ = keys.verify(token);
    let _ = keys.verify_with_leeway(token, 0);
    let _ = keys.signed_subject(token);
});
