//! Access tokens: verifying the JWTs clients join with, and minting them.
//!
//! A token is an HS256 JWT signed with the secret of one of the server's API keys, named by the header's `kid` or
//! else the `iss` claim. It carries the identity (`sub`) and the grants (`video`): which room, and whether the
//! holder may publish and subscribe. Every failure maps to a documented close code.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Allowed clock skew between the token minter and this server, by default (`limits.token_leeway_secs`).
pub const LEEWAY_SECS: u64 = 60;

/// The `video` grant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VideoGrant {
    pub room: String,
    #[serde(default)]
    pub room_join: bool,
    #[serde(default = "yes")]
    pub can_publish: bool,
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    /// May send chat messages (reading the room's chat comes with joining).
    #[serde(default = "yes")]
    pub can_chat: bool,
    /// May moderate the room: high-priority chat, recalling others' messages.
    #[serde(default)]
    pub room_admin: bool,
}

fn yes() -> bool {
    true
}

/// Token claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    #[serde(default)]
    pub iss: String,
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub video: VideoGrant,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT, bad signature, unknown key, wrong algorithm, or missing claims.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Expired or not yet valid.
    #[error("token expired or not yet valid")]
    Expired,
    /// The grants do not allow joining.
    #[error("token does not allow joining: {0}")]
    NotAllowed(String),
}

/// The server's API keys (key → secret).
#[derive(Debug, Clone, Default)]
pub struct Keys(pub HashMap<String, String>);

impl Keys {
    /// Verify a join token and return its claims, allowing [`LEEWAY_SECS`] of clock skew.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_with_leeway(token, LEEWAY_SECS)
    }

    /// Verify a join token and return its claims, allowing `leeway_secs` of clock skew on `exp` and `nbf`
    /// (`limits.token_leeway_secs`).
    pub fn verify_with_leeway(&self, token: &str, leeway_secs: u64) -> Result<Claims, TokenError> {
        if token.len() > 8192 {
            return Err(TokenError::Invalid("token too long".into()));
        }
        let header = decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid("algorithm must be HS256".into()));
        }
        let key = match header.kid {
            Some(k) => k,
            None => unverified_iss(token).ok_or_else(|| TokenError::Invalid("no kid and no iss".into()))?,
        };
        let secret = self.0.get(&key).ok_or_else(|| TokenError::Invalid("unknown API key".into()))?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = leeway_secs;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            }
        })?;
        let c = data.claims;
        if !c.iss.is_empty() && c.iss != key {
            return Err(TokenError::Invalid("iss does not match kid".into()));
        }
        if c.sub.is_empty() || c.sub.len() > 256 {
            return Err(TokenError::Invalid("sub must be 1..=256 bytes".into()));
        }
        if !c.video.room_join {
            return Err(TokenError::NotAllowed("room_join is not granted".into()));
        }
        if c.video.room.is_empty() || c.video.room.len() > 256 {
            return Err(TokenError::NotAllowed("room must be 1..=256 bytes".into()));
        }
        Ok(c)
    }
}

impl Keys {
    /// The subject (`sub`) of a token signed by one of the keys, its other claims (expiry, grants) unchecked. For
    /// limiting requests per identity before a route looks at what the token allows: a forged token cannot spend
    /// someone else's budget.
    pub fn signed_subject(&self, token: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Subject {
            sub: String,
        }
        if token.len() > 8192 {
            return None;
        }
        let header = decode_header(token).ok()?;
        if header.alg != Algorithm::HS256 {
            return None;
        }
        let key = header.kid.or_else(|| unverified_iss(token))?;
        let secret = self.0.get(&key)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.set_required_spec_claims::<&str>(&[]);
        let data = decode::<Subject>(token, &DecodingKey::from_secret(secret.as_bytes()), &v).ok()?;
        Some(data.claims.sub).filter(|s| !s.is_empty() && s.len() <= 256)
    }
}

fn unverified_iss(token: &str) -> Option<String> {
    use base64_url_decode as b64;
    let payload = token.split('.').nth(1)?;
    let bytes = b64(payload)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// Minimal base64url (no padding) decoder, for reading `iss` before the key is known.
fn base64_url_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// What a minted token grants.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub room: String,
    pub identity: String,
    pub name: Option<String>,
    pub ttl: Duration,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_chat: bool,
    pub room_admin: bool,
}

/// Mint a token signed with `key`/`secret`.
pub fn mint(key: &str, secret: &str, req: &TokenRequest) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = Claims {
        iss: key.to_string(),
        sub: req.identity.clone(),
        exp: now + req.ttl.as_secs(),
        nbf: None,
        name: req.name.clone(),
        video: VideoGrant {
            room: req.room.clone(),
            room_join: true,
            can_publish: req.can_publish,
            can_subscribe: req.can_subscribe,
            can_chat: req.can_chat,
            room_admin: req.room_admin,
        },
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.to_string());
    encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("HS256 encoding cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys([("k1".to_string(), "s1".to_string()), ("k2".to_string(), "s2".to_string())].into())
    }

    fn req() -> TokenRequest {
        TokenRequest {
            room: "r".into(),
            identity: "alice".into(),
            name: None,
            ttl: Duration::from_secs(60),
            can_publish: true,
            can_subscribe: false,
            can_chat: true,
            room_admin: false,
        }
    }

    #[test]
    fn round_trip() {
        let c = keys().verify(&mint("k1", "s1", &req())).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.video.room, "r");
        assert!(c.video.can_publish && !c.video.can_subscribe);
    }

    #[test]
    fn refusals() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let sign = |claims: serde_json::Value, kid: Option<&str>, secret: &str| {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = kid.map(str::to_string);
            encode(&h, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
        };
        let good = serde_json::json!({"sub":"a","exp":now+60,"video":{"room":"r","room_join":true}});
        let expired = serde_json::json!({"sub":"a","exp":now-120,"video":{"room":"r","room_join":true}});
        let no_join = serde_json::json!({"sub":"a","exp":now+60,"video":{"room":"r"}});
        let no_sub = serde_json::json!({"exp":now+60,"video":{"room":"r","room_join":true}});
        let iss_only = serde_json::json!({"iss":"k2","sub":"a","exp":now+60,"video":{"room":"r","room_join":true}});
        let cases: Vec<(&str, String, Result<(), TokenError>)> = vec![
            ("good", sign(good.clone(), Some("k1"), "s1"), Ok(())),
            ("key named by iss", sign(iss_only, None, "s2"), Ok(())),
            ("wrong secret", sign(good.clone(), Some("k1"), "s2"), Err(TokenError::Invalid(String::new()))),
            ("unknown key", sign(good.clone(), Some("nope"), "s1"), Err(TokenError::Invalid(String::new()))),
            ("no key named", sign(good, None, "s1"), Err(TokenError::Invalid(String::new()))),
            ("expired", sign(expired, Some("k1"), "s1"), Err(TokenError::Expired)),
            ("no room_join", sign(no_join, Some("k1"), "s1"), Err(TokenError::NotAllowed(String::new()))),
            ("no sub", sign(no_sub, Some("k1"), "s1"), Err(TokenError::Invalid(String::new()))),
            ("garbage", "a.b.c".into(), Err(TokenError::Invalid(String::new()))),
            ("empty", String::new(), Err(TokenError::Invalid(String::new()))),
        ];
        for (name, token, want) in cases {
            let got = keys().verify(&token).map(|_| ());
            assert_eq!(
                std::mem::discriminant(&got.as_ref().map_err(std::mem::discriminant).err()),
                std::mem::discriminant(&want.as_ref().map_err(std::mem::discriminant).err()),
                "{name}: {got:?}"
            );
            if let (Err(g), Err(w)) = (&got, &want) {
                assert_eq!(std::mem::discriminant(g), std::mem::discriminant(w), "{name}: {got:?}");
            }
        }
    }

    #[test]
    fn clock_skew_is_the_configured_leeway() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let claims = serde_json::json!({"sub":"a","exp":now-30,"video":{"room":"r","room_join":true}});
        let late = encode(&h, &claims, &EncodingKey::from_secret(b"s1")).unwrap();
        assert!(keys().verify_with_leeway(&late, 60).is_ok(), "30 s late is within 60 s of skew");
        assert_eq!(keys().verify_with_leeway(&late, 5), Err(TokenError::Expired));
        let claims = serde_json::json!({"sub":"a","exp":now+600,"nbf":now+30,"video":{"room":"r","room_join":true}});
        let early = encode(&h, &claims, &EncodingKey::from_secret(b"s1")).unwrap();
        assert!(keys().verify_with_leeway(&early, 60).is_ok());
        assert_eq!(keys().verify_with_leeway(&early, 5), Err(TokenError::Expired));
    }

    #[test]
    fn signed_subject_needs_a_good_signature_only() {
        let t = mint("k1", "s1", &req());
        assert_eq!(keys().signed_subject(&t).as_deref(), Some("alice"));
        let forged = mint("k1", "not-the-secret", &req());
        assert_eq!(keys().signed_subject(&forged), None);
        assert_eq!(keys().signed_subject("garbage"), None);
    }

    #[test]
    fn base64url() {
        assert_eq!(base64_url_decode("eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
        assert_eq!(base64_url_decode("!!"), None);
    }
}
