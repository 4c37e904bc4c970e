//! TURN credentials by the "TURN REST API" convention (draft-uberti-behave-turn-rest, what coturn calls
//! `use-auth-secret`): the username is `<expiry unix seconds>:<who>`, the password is
//! `base64(HMAC-SHA1(secret, username))`. Whoever knows the secret mints credentials without asking the TURN
//! server, and the TURN server checks them without storing any. The long-term key of RFC 8489 §9.2.2 is then
//! `MD5(username ":" realm ":" password)`.

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// A credential for one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

/// Mints the credential of `who` (an identity, or `room/participant`) valid until `expires_unix` seconds.
pub fn mint(secret: &[u8], who: &str, expires_unix: u64) -> Credential {
    let username = format!("{expires_unix}:{who}");
    let password = password(secret, &username);
    Credential { username, password }
}

/// The password that belongs to `username` under `secret`.
pub fn password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Splits a REST username into (expiry unix seconds, who); `None` when it is not of that form.
pub fn parse_username(username: &str) -> Option<(u64, &str)> {
    let (expiry, who) = username.split_once(':')?;
    Some((expiry.parse().ok()?, who))
}

/// The long-term credential key (RFC 8489 §9.2.2, MD5 algorithm).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_parse() {
        let c = mint(b"secret", "room1/alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:room1/alice");
        assert_eq!(parse_username(&c.username), Some((1_700_000_000, "room1/alice")));
        assert_eq!(c.password, password(b"secret", &c.username));
        assert_ne!(c.password, password(b"other", &c.username));
        assert_eq!(parse_username("alice"), None);
        assert_eq!(parse_username("soon:alice"), None);
    }

    #[test]
    fn known_vectors() {
        // Computed independently with Python's hmac/hashlib.
        assert_eq!(password(b"north", "1433895918:alice"), "RqMvcGPYTJMGThVLSi4amT4zFtI=");
        let hex: String = long_term_key("user", "realm", "pass").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "8493fbc53ba582fb4c044c456bdc40eb");
    }
}
