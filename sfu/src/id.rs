//! Identifiers shared by the engine and its callers.
//!
//! A [`PeerId`] names one participant's WebRTC connection and a [`TrackId`] one published track. Both are random
//! 64-bit values (not counters), so an id that leaks into a URL or a log says nothing about how many peers the
//! server has seen, and ids from two server processes do not collide in practice.

use std::fmt;

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl $name {
            /// A fresh random id (never zero).
            pub fn random() -> Self {
                loop {
                    let v: u64 = rand::random();
                    if v != 0 {
                        return Self(v);
                    }
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        /// The inverse of `Display` (16 hex digits), for ids that crossed to another node.
        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                u64::from_str_radix(s, 16).map(Self)
            }
        }
    };
}

random_id!(
    /// One participant's peer connection inside the engine.
    PeerId
);
random_id!(
    /// One published track (one m-line of a publisher), whatever its simulcast layers.
    TrackId
);

/// Index of a worker task; peers are sharded over workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId(pub usize);
