//! Join admission: whether a `join` gets in, and if not, the refusal — its error code, close code, message and the
//! counter it adds to. One decision, in the documented order, with no socket in it.
//!
//! The order puts what costs nothing first: the protocol version, a draining server, the address's join rate,
//! the token, the identity's join rate, then the room (its caps and its own rules). Each check runs only if the
//! ones before it passed — a refused address takes no token of its identity — so the checks that touch state
//! (the rate limiters, the room registry) come in as closures; tests pass plain ones.

use courier_protocol::{close, Claims, ErrorCode, VERSION};

use crate::auth::TokenError;
use crate::limits::Refused;

/// Which refusal counter (`/metrics`, `courier_joins_refused_total`) a refusal adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Draining,
    RateLimited,
    RoomFull,
    TooManyRooms,
    RoomUnavailable,
}

/// A refused join: sent as an `error` (`req_type` join), then the close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub close: u16,
    pub message: String,
    /// `None`: refusals of bad input (token, version) are not counted as refused joins.
    pub counter: Option<Counter>,
}

impl Refusal {
    fn new(code: ErrorCode, close: u16, message: impl Into<String>, counter: Option<Counter>) -> Refusal {
        Refusal { code, close, message: message.into(), counter }
    }
}

/// What admission looks up, each only when the checks before it passed.
pub struct Checks<Ip, Token, Identity, Room>
where
    Ip: FnOnce() -> Result<(), Refused>,
    Token: FnOnce() -> Result<Claims, TokenError>,
    Identity: FnOnce(&str) -> Result<(), Refused>,
    Room: FnOnce(&str, &str) -> Result<(), ErrorCode>,
{
    /// The `v` of the join.
    pub version: u32,
    /// The server is shutting down.
    pub draining: bool,
    /// Take a join token of the client's address.
    pub ip_rate: Ip,
    /// Verify the access token.
    pub token: Token,
    /// Take a join token of the identity.
    pub identity_rate: Identity,
    /// May `identity` join `room` (caps, the room's phase and members)?
    pub room: Room,
}

/// Admit a join (its claims), or say why not. See the module doc for the order.
pub fn admit<Ip, Token, Identity, Room>(checks: Checks<Ip, Token, Identity, Room>) -> Result<Claims, Refusal>
where
    Ip: FnOnce() -> Result<(), Refused>,
    Token: FnOnce() -> Result<Claims, TokenError>,
    Identity: FnOnce(&str) -> Result<(), Refused>,
    Room: FnOnce(&str, &str) -> Result<(), ErrorCode>,
{
    if checks.version != VERSION {
        let why = format!("protocol version {} is not spoken here (this server speaks {VERSION})", checks.version);
        return Err(Refusal::new(ErrorCode::BadVersion, close::BAD_VERSION, why, None));
    }
    if checks.draining {
        let why = "server draining; join another server";
        return Err(Refusal::new(ErrorCode::ServerDraining, close::TRY_AGAIN_LATER, why, Some(Counter::Draining)));
    }
    if let Err(r) = (checks.ip_rate)() {
        let why = format!("too many joins from this address; retry in {} s", r.retry_after_secs());
        return Err(Refusal::new(ErrorCode::RateLimited, close::RATE_LIMITED, why, Some(Counter::RateLimited)));
    }
    let claims = (checks.token)().map_err(|e| {
        let (code, close, why) = match e {
            TokenError::Expired => (ErrorCode::TokenExpired, close::TOKEN_EXPIRED, "token expired or not yet valid"),
            TokenError::NotAllowed(_) => {
                (ErrorCode::NotAllowed, close::NOT_ALLOWED, "the token does not allow joining this room")
            }
            _ => (ErrorCode::InvalidToken, close::INVALID_TOKEN, "invalid token"),
        };
        Refusal::new(code, close, why, None)
    })?;
    if let Err(r) = (checks.identity_rate)(&claims.sub) {
        let why = format!("too many joins of this identity; retry in {} s", r.retry_after_secs());
        return Err(Refusal::new(ErrorCode::RateLimited, close::RATE_LIMITED, why, Some(Counter::RateLimited)));
    }
    if let Err(code) = (checks.room)(&claims.video.room, &claims.sub) {
        return Err(room_refusal(code));
    }
    Ok(claims)
}

/// The refusal of a join the room registry turned down: the server's caps or the room's own rules.
pub fn room_refusal(code: ErrorCode) -> Refusal {
    let (close, counter, why) = match code {
        ErrorCode::RoomFull => (close::ROOM_FULL, Counter::RoomFull, "the room is full"),
        ErrorCode::TooManyRooms => {
            (close::TOO_MANY_ROOMS, Counter::TooManyRooms, "the server has as many rooms as it may")
        }
        ErrorCode::RoomNotFound => (close::ROOM_UNAVAILABLE, Counter::RoomUnavailable, "no such room"),
        ErrorCode::RoomNotOpen => (close::ROOM_UNAVAILABLE, Counter::RoomUnavailable, "the room is not open yet"),
        ErrorCode::NotInvited => {
            (close::ROOM_UNAVAILABLE, Counter::RoomUnavailable, "you are not a member of this room")
        }
        ErrorCode::RoomClosed => (close::ROOM_UNAVAILABLE, Counter::RoomUnavailable, "the room is closed"),
        _ => (close::ROOM_UNAVAILABLE, Counter::RoomUnavailable, "join refused"),
    };
    Refusal::new(code, close, why, Some(counter))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use courier_protocol::VideoGrant;

    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "k".into(),
            sub: "alice".into(),
            exp: u64::MAX,
            nbf: None,
            name: None,
            metadata: None,
            video: VideoGrant {
                room: "r".into(),
                room_join: true,
                can_publish: true,
                can_subscribe: true,
                can_chat: true,
                room_admin: false,
                can_publish_sources: None,
                hidden: false,
                room_create: false,
                room_list: false,
            },
        }
    }

    const SLOW: Refused = Refused { retry_after: Duration::from_millis(1500) };

    /// Every outcome, and that no check runs after a refusal.
    #[test]
    fn every_refusal_in_order() {
        type Case = (&'static str, u32, bool, bool, Result<(), TokenError>, bool, Result<(), ErrorCode>);
        let cases: Vec<(Case, Option<(ErrorCode, u16, Option<Counter>)>, usize)> = vec![
            (("admitted", 1, false, true, Ok(()), true, Ok(())), None, 4),
            (("version", 2, false, true, Ok(()), true, Ok(())), Some((ErrorCode::BadVersion, 4005, None)), 0),
            (
                ("draining", 1, true, true, Ok(()), true, Ok(())),
                Some((ErrorCode::ServerDraining, 1013, Some(Counter::Draining))),
                0,
            ),
            (
                ("address rate", 1, false, false, Ok(()), true, Ok(())),
                Some((ErrorCode::RateLimited, 4029, Some(Counter::RateLimited))),
                1,
            ),
            (
                ("bad token", 1, false, true, Err(TokenError::Invalid("x".into())), true, Ok(())),
                Some((ErrorCode::InvalidToken, 4001, None)),
                2,
            ),
            (
                ("expired token", 1, false, true, Err(TokenError::Expired), true, Ok(())),
                Some((ErrorCode::TokenExpired, 4002, None)),
                2,
            ),
            (
                ("no room_join", 1, false, true, Err(TokenError::NotAllowed("x".into())), true, Ok(())),
                Some((ErrorCode::NotAllowed, 4004, None)),
                2,
            ),
            (
                ("identity rate", 1, false, true, Ok(()), false, Ok(())),
                Some((ErrorCode::RateLimited, 4029, Some(Counter::RateLimited))),
                3,
            ),
            (
                ("room full", 1, false, true, Ok(()), true, Err(ErrorCode::RoomFull)),
                Some((ErrorCode::RoomFull, 4006, Some(Counter::RoomFull))),
                4,
            ),
            (
                ("too many rooms", 1, false, true, Ok(()), true, Err(ErrorCode::TooManyRooms)),
                Some((ErrorCode::TooManyRooms, 4007, Some(Counter::TooManyRooms))),
                4,
            ),
            (
                ("not invited", 1, false, true, Ok(()), true, Err(ErrorCode::NotInvited)),
                Some((ErrorCode::NotInvited, 4011, Some(Counter::RoomUnavailable))),
                4,
            ),
        ];
        for ((name, version, draining, ip_ok, token, identity_ok, room_answer), want, ran_want) in cases {
            let ran = Cell::new(0);
            let step = || ran.set(ran.get() + 1);
            let got = admit(Checks {
                version,
                draining,
                ip_rate: || {
                    step();
                    if ip_ok {
                        Ok(())
                    } else {
                        Err(SLOW)
                    }
                },
                token: || {
                    step();
                    token.map(|()| claims())
                },
                identity_rate: |identity| {
                    step();
                    assert_eq!(identity, "alice");
                    if identity_ok {
                        Ok(())
                    } else {
                        Err(SLOW)
                    }
                },
                room: |room, identity| {
                    step();
                    assert_eq!((room, identity), ("r", "alice"));
                    room_answer
                },
            });
            match (got, want) {
                (Ok(c), None) => assert_eq!(c.sub, "alice", "{name}"),
                (Err(r), Some((code, close, counter))) => {
                    assert_eq!((r.code, r.close, r.counter), (code, close, counter), "{name}");
                    if code == ErrorCode::RateLimited {
                        assert!(r.message.contains("retry in 2 s"), "{name}: {}", r.message);
                    }
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
            assert_eq!(ran.get(), ran_want, "{name}: checks run");
        }
    }
}
