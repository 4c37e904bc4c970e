//! The wall clock and random ids, in one place for the chat core and the server shell.
//!
//! Decisions take the time as an input (the sans-I/O parts get an `Instant` or these milliseconds from their
//! caller); only the edges read the clock, and they read it here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds now (0 if the clock is before 1970; saturating far in the future).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// A random alphanumeric string of `len` characters, for ids (`PA_…`, `EV_…`).
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_length_and_alphabet_asked_for() {
        let t = random_token(20);
        assert_eq!(t.len(), 20);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_token(20), t, "random");
        assert!(now_ms() > 1_700_000_000_000, "after 2023");
    }
}
