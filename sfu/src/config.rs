//! The engine's validated configuration.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::SfuError;

/// How the engine runs. Built by the binary from its own config; checked by [`SfuConfig::validate`] at start-up,
/// so a bad value fails there and never later.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Where the one UDP socket binds (port 0: any free port).
    pub udp_addr: SocketAddr,
    /// The address announced in candidates, when it differs from the bound one (NAT, 0.0.0.0 binds).
    pub public_ip: Option<IpAddr>,
    /// Where the ICE-TCP listener binds (RFC 6544 passive candidates for clients whose UDP is blocked); `None`: no
    /// ICE-TCP. Announced with `public_ip` like the UDP port.
    pub tcp_addr: Option<SocketAddr>,
    /// Worker tasks; peers are spread over them. About one per core.
    pub workers: usize,
    /// Capacity of each worker's queue (datagrams, media batches, control). Full means drop, never wait.
    pub worker_queue: usize,
    /// Messages a worker takes per cycle before it services its timers.
    pub worker_batch: usize,
    /// Minimum interval between keyframe requests sent to one publisher track.
    pub keyframe_request_interval: Duration,
    /// Send-side bandwidth estimation (TWCC) and the stream allocator, starting from this estimate in kbit/s;
    /// `None` turns both off (every subscriber then gets what its settings want).
    pub bwe_initial_kbps: Option<u32>,
    /// Send a run of datagrams to one destination as one message with UDP generic segmentation offload
    /// ([`crate::udp_send`]) where the kernel and device can.
    pub udp_gso: bool,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_ip: None,
            tcp_addr: None,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            worker_queue: 8192,
            worker_batch: 512,
            keyframe_request_interval: Duration::from_millis(500),
            bwe_initial_kbps: Some(1000),
            udp_gso: true,
        }
    }
}

impl SfuConfig {
    /// Check the values.
    pub fn validate(&self) -> Result<(), SfuError> {
        let bad = |what: &str| Err(SfuError::Config(what.to_string()));
        if self.workers == 0 || self.workers > 256 {
            return bad("workers must be between 1 and 256");
        }
        if self.worker_queue < 16 {
            return bad("worker_queue must be at least 16");
        }
        if self.bwe_initial_kbps.is_some_and(|k| !(30..=100_000).contains(&k)) {
            return bad("bwe_initial_kbps must be between 30 and 100000");
        }
        if self.worker_batch == 0 {
            return bad("worker_batch must be at least 1");
        }
        if self.udp_addr.ip().is_unspecified() && self.public_ip.is_none() {
            return bad("binding UDP to an unspecified address needs public_ip to announce");
        }
        if self.tcp_addr.is_some_and(|a| a.ip().is_unspecified()) && self.public_ip.is_none() {
            return bad("binding ICE-TCP to an unspecified address needs public_ip to announce");
        }
        Ok(())
    }
}
