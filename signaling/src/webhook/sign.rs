//! Webhook signatures: how a receiver knows a delivery came from this server, unchanged, and recently.
//!
//! Every delivery carries `Courier-Signature: t=<unix seconds>,v1=<hex>`, where `v1` is HMAC-SHA256, keyed with the
//! endpoint's secret, over the ASCII bytes `"<t>."` followed by the exact request body. Signing the time with the
//! body lets a receiver refuse replays: it checks the HMAC, then that `t` is within a few minutes of its own clock.
//! A retry is signed again with a fresh `t`. Receivers compare in constant time ([`verify`] does).

use ring::hmac;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "courier-signature";
/// The event id header, for de-duplication (the same as the body's `id`).
pub const EVENT_ID_HEADER: &str = "courier-event-id";
/// Which attempt this is, from 1.
pub const ATTEMPT_HEADER: &str = "courier-delivery-attempt";

/// The `Courier-Signature` value for `body` sent at `t` (Unix seconds).
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{t}.").as_bytes());
    ctx.update(body);
    format!("t={t},v1={}", hex(ctx.sign().as_ref()))
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// The HMAC does not match: wrong secret, or the body or time was changed.
    #[error("signature does not match")]
    Mismatch,
    /// `t` is further than the tolerance from the receiver's clock (a replay, or a clock far off).
    #[error("signature time outside the tolerance")]
    Stale,
}

/// Check a `Courier-Signature` header against `body`, with the receiver's clock at `now` (Unix seconds) and
/// `tolerance_secs` of allowed difference. Several `v1=` entries may be present (secret rotation); one must match.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance_secs: u64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => sigs.push(unhex(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    if !sigs.iter().any(|s| hmac::verify(&key, &signed, s).is_ok()) {
        return Err(SignatureError::Mismatch);
    }
    if now.abs_diff(t) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key = "whsec_test", "1700000000.{}") computed independently (Python hmac module).
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, b"{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn verify_cases() {
        let body = br#"{"id":"EV_1","event":"room_started"}"#;
        let good = sign(b"secret-1", 1000, body);
        type Case<'a> = (&'a [u8], &'a str, &'a [u8], u64, Result<(), SignatureError>);
        let cases: &[Case] = &[
            (b"secret-1", &good, body, 1000, Ok(())),
            (b"secret-1", &good, body, 1300, Ok(())),
            (b"secret-1", &good, body, 1301, Err(SignatureError::Stale)),
            (b"secret-1", &good, body, 699, Err(SignatureError::Stale)),
            (b"secret-2", &good, body, 1000, Err(SignatureError::Mismatch)),
            (b"secret-1", &good, br#"{"id":"EV_2","event":"room_started"}"#, 1000, Err(SignatureError::Mismatch)),
            (b"secret-1", "t=1000", body, 1000, Err(SignatureError::Malformed)),
            (b"secret-1", "v1=00", body, 1000, Err(SignatureError::Malformed)),
            (b"secret-1", "t=x,v1=00", body, 1000, Err(SignatureError::Malformed)),
            (b"secret-1", "t=1000,v1=zz", body, 1000, Err(SignatureError::Malformed)),
            (b"secret-1", "", body, 1000, Err(SignatureError::Malformed)),
        ];
        for (i, (secret, header, body, now, want)) in cases.iter().enumerate() {
            assert_eq!(verify(secret, header, body, *now, 300), *want, "case {i}: {header}");
        }
        // A retry re-signed with a new time: the old time is not accepted with the new signature.
        let forged = good.replace("t=1000", "t=1200");
        assert_eq!(verify(b"secret-1", &forged, body, 1200, 300), Err(SignatureError::Mismatch));
        // Rotation: one of several v1 entries matches.
        let rotated = format!("{good},v1={}", "00".repeat(32));
        assert_eq!(verify(b"secret-1", &rotated, body, 1000, 300), Ok(()));
    }
}
