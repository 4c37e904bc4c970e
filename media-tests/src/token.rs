//! Minting access tokens for tests.
//!
//! Every scenario needs tokens with chosen identities and grants; minting them here (HS256 with
//! a key and secret the test also hands to `courier serve --keys`) keeps tests independent of the
//! server's own token route. The claims are those of `docs/protocol.md`, "Access tokens".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What to put in a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// API key: the `iss` claim and the header's `kid`.
    pub key: String,
    /// The key's secret (HS256).
    pub secret: String,
    /// `video.room`.
    pub room: String,
    /// `sub`: the participant's identity.
    pub identity: String,
    /// `name`, omitted when `None`.
    pub name: Option<String>,
    /// Lifetime: `exp` = now + ttl.
    pub ttl: Duration,
    /// `video.can_publish`.
    pub can_publish: bool,
    /// `video.can_subscribe`.
    pub can_subscribe: bool,
    /// `video.hidden`: a viewer the room does not announce (a huge live room's audience).
    pub hidden: bool,
}

impl TokenRequest {
    /// A one-hour token that may publish and subscribe.
    pub fn new(key: &str, secret: &str, room: &str, identity: &str) -> Self {
        Self {
            key: key.to_owned(),
            secret: secret.to_owned(),
            room: room.to_owned(),
            identity: identity.to_owned(),
            name: None,
            ttl: Duration::from_secs(3600),
            can_publish: true,
            can_subscribe: true,
            hidden: false,
        }
    }
}

/// The JWT claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// API key.
    pub iss: String,
    /// Identity.
    pub sub: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Room grants.
    pub video: VideoGrant,
}

/// The `video` claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoGrant {
    /// The room.
    pub room: String,
    /// Must be true to join.
    pub room_join: bool,
    /// May publish.
    pub can_publish: bool,
    /// May subscribe.
    pub can_subscribe: bool,
    /// Not announced to the room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// Token minting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// jsonwebtoken could not sign.
    #[error("signing the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs a token for `req` (HS256, header `kid` = key).
pub fn mint_token(req: &TokenRequest) -> Result<String, TokenError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = Claims {
        iss: req.key.clone(),
        sub: req.identity.clone(),
        name: req.name.clone(),
        exp: now + req.ttl.as_secs(),
        video: VideoGrant {
            room: req.room.clone(),
            room_join: true,
            can_publish: req.can_publish,
            can_subscribe: req.can_subscribe,
            hidden: req.hidden,
        },
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(req.key.clone());
    Ok(jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(req.secret.as_bytes()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut req = TokenRequest::new("devkey", "s3cret", "demo", "alice");
        req.name = Some("Alice".into());
        req.can_publish = false;
        let token = mint_token(&req).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("devkey"));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&["devkey"]);
        let data =
            jsonwebtoken::decode::<Claims>(&token, &jsonwebtoken::DecodingKey::from_secret(b"s3cret"), &validation)
                .unwrap();
        let c = data.claims;
        assert_eq!((c.sub.as_str(), c.name.as_deref()), ("alice", Some("Alice")));
        assert_eq!(
            c.video,
            VideoGrant { room: "demo".into(), room_join: true, can_publish: false, can_subscribe: true, hidden: false }
        );
        assert!(jsonwebtoken::decode::<Claims>(&token, &jsonwebtoken::DecodingKey::from_secret(b"wrong"), &validation)
            .is_err());
        // Without a name the claim is absent, not null.
        let raw = mint_token(&TokenRequest::new("k", "s", "r", "i")).unwrap();
        let payload = raw.split('.').nth(1).unwrap();
        use base64::Engine;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(v.get("name").is_none());
    }
}
