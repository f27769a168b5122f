//! A peer's configuration and the status its session reports.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::fsm::{GracefulRestart, State};
use crate::packet::{Afi, ErrorHandling};

pub const DEFAULT_PORT: u16 = 179;
/// RFC 4271 §10 suggests 90 s.
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// How long one connect attempt may take before the peer counts as not answering.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 4724 restart time we advertise by default: long enough for a DaemonSet pod to be replaced.
pub const DEFAULT_RESTART_TIME: u16 = 120;

/// One BGP neighbor.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    /// Our AS number towards this peer (like a per-neighbor `local-as`); else the speaker's. It goes in this
    /// session's OPEN, decides iBGP or eBGP, and is the AS_PATH of the routes sent on it.
    pub local_asn: Option<u32>,
    /// Also accept the peer's connections (listening on `listen_port`), not only connect out. Connection
    /// collisions are resolved per RFC 4271 §6.8.
    pub passive: bool,
    /// Local port to listen on when `passive`.
    pub listen_port: u16,
    /// Address families offered in OPEN and announced to this peer: [`Afi::IPV4`] and/or [`Afi::IPV6`]. Routes of
    /// other families are never sent to it.
    pub families: Vec<Afi>,
    /// Source address of the session (and so the default next hop); else the kernel picks one.
    pub local_address: Option<IpAddr>,
    /// IP TTL / hop limit of our packets (eBGP multihop); else the kernel default.
    pub ttl: Option<u8>,
    /// RFC 2385 TCP MD5 key.
    pub password: Option<Vec<u8>>,
    /// Proposed hold time in seconds (0, or at least 3).
    pub hold_time: u16,
    /// Keepalive interval in seconds; `None`: a third of the negotiated hold time (which also caps it).
    pub keepalive_time: Option<u16>,
    /// The longest pause between connection attempts (they back off from 1 s).
    pub connect_retry_max: Duration,
    /// Advertise graceful restart (RFC 4724) as the restarting speaker.
    pub graceful_restart: Option<GracefulRestart>,
    /// Next hops overriding the session's source address, per family.
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    pub connect_timeout: Duration,
    /// Run a BFD session (RFC 5880/5881) to the peer with these timers, and take the BGP session down when it
    /// goes down (RFC 5882). The peer must be a direct neighbor (single hop).
    pub bfd: Option<herald_bfd::Timers>,
}

impl PeerConfig {
    /// A peer with defaults: port 179, hold time 90 s, no MD5, no graceful restart, IPv4 and IPv6, connect out only,
    /// the speaker's ASN.
    pub fn new(address: IpAddr, asn: u32) -> Self {
        PeerConfig {
            address,
            port: DEFAULT_PORT,
            asn,
            local_asn: None,
            passive: false,
            listen_port: DEFAULT_PORT,
            families: vec![Afi::IPV4, Afi::IPV6],
            local_address: None,
            ttl: None,
            password: None,
            hold_time: DEFAULT_HOLD_TIME,
            keepalive_time: None,
            connect_retry_max: crate::fsm::RETRY_MAX,
            graceful_restart: None,
            next_hop_v4: None,
            next_hop_v6: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            bfd: None,
        }
    }

    /// Whether `other` differs from this configuration at most in its BFD settings, which change without a new
    /// BGP session.
    pub fn same_session(&self, other: &PeerConfig) -> bool {
        let bgp_only = |c: &PeerConfig| PeerConfig { bfd: None, ..c.clone() };
        bgp_only(self) == bgp_only(other)
    }

    /// Rejects what the session could never use, with the fix in the message.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidPeerConfig {
                peer: self.address,
                reason,
            })
        };
        if matches!(self.hold_time, 1 | 2) {
            return bad(format!(
                "hold time {}s is not allowed: use 0 or at least 3 (RFC 4271 §4.2)",
                self.hold_time
            ));
        }
        if let Some(local) = self.local_address
            && local.is_ipv4() != self.address.is_ipv4()
        {
            return bad(format!("local address {local} is not of the peer's address family"));
        }
        if let Some(key) = &self.password
            && (key.is_empty() || key.len() > herald_sys::tcp_md5::MAX_KEY_LEN)
        {
            return bad(format!("TCP MD5 password must be 1 to 80 bytes, it is {}", key.len()));
        }
        if self.port == 0 {
            return bad("port 0 is not a valid BGP port".to_string());
        }
        if self.passive && self.listen_port == 0 {
            return bad("listen port 0 is not a valid BGP port for a passive peer".to_string());
        }
        if self.local_asn == Some(0) {
            return bad("local ASN 0 is reserved (RFC 7607)".to_string());
        }
        if self.families.is_empty() {
            return bad("no address family to announce: give IPv4, IPv6 or both".to_string());
        }
        if let Some(t) = &self.bfd {
            if t.detect_mult == 0 {
                return bad("BFD detect multiplier 0 is not allowed: use 1 to 255 (3 is usual)".to_string());
            }
            if t.desired_min_tx.is_zero() || t.required_min_rx.is_zero() {
                return bad("BFD intervals must be above 0 (300 ms is usual)".to_string());
            }
            if self.ttl.is_some_and(|ttl| ttl > 1) {
                return bad(format!(
                    "BFD runs single hop (RFC 5881) but the session is multihop (TTL {}): turn one of them off",
                    self.ttl.unwrap_or_default()
                ));
            }
        }
        if let Some(afi) = self.families.iter().find(|a| !matches!(**a, Afi::IPV4 | Afi::IPV6)) {
            return bad(format!(
                "address family {} is not supported: only IPv4 (1) and IPv6 (2)",
                afi.0
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("asn", &self.asn)
            .field("local_asn", &self.local_asn)
            .field("passive", &self.passive)
            .field("listen_port", &self.listen_port)
            .field("families", &self.families)
            .field("local_address", &self.local_address)
            .field("ttl", &self.ttl)
            // Never print the key.
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("hold_time", &self.hold_time)
            .field("graceful_restart", &self.graceful_restart)
            .field("next_hop_v4", &self.next_hop_v4)
            .field("next_hop_v6", &self.next_hop_v6)
            .field("bfd", &self.bfd)
            .finish()
    }
}

/// What a peer's session reports (for the API, logs and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub asn: u32,
    pub state: State,
    /// When the session reached Established (None when it is not).
    pub established_at: Option<Instant>,
    /// Why the session last failed, e.g. "no answer: TCP MD5 key mismatch or peer not configured for MD5?".
    pub last_error: Option<String>,
    /// Prefixes currently announced to the peer.
    pub prefixes_sent: usize,
    pub updates_sent: u64,
    pub updates_received: u64,
    pub notifications_sent: u64,
    pub notifications_received: u64,
    /// Received UPDATEs that were malformed in a way RFC 7606 handles without a session reset.
    pub malformed_updates: MalformedUpdates,
    /// The last of them: how it was handled and why, e.g. `treat-as-withdraw: ORIGIN value 5 is undefined`.
    pub last_malformed_update: Option<String>,
    /// Times the session reached Established.
    pub established_count: u64,
    /// Negotiated hold time, while a session is up.
    pub hold_time: Option<u16>,
    /// The BFD session's status, when BFD is on for this peer.
    pub bfd: Option<herald_bfd::SessionStatus>,
    /// Times BFD took the session down.
    pub bfd_downs: u64,
}

impl PeerStatus {
    pub fn new(address: IpAddr, asn: u32) -> Self {
        PeerStatus {
            address,
            asn,
            state: State::Idle,
            established_at: None,
            last_error: None,
            prefixes_sent: 0,
            updates_sent: 0,
            updates_received: 0,
            notifications_sent: 0,
            notifications_received: 0,
            malformed_updates: MalformedUpdates::default(),
            last_malformed_update: None,
            established_count: 0,
            hold_time: None,
            bfd: None,
            bfd_downs: 0,
        }
    }

    /// How long the session has been Established.
    pub fn uptime(&self) -> Option<Duration> {
        self.established_at.map(|t| t.elapsed())
    }
}

/// Received UPDATEs that RFC 7606 let the session survive, by how they were handled (RFC 7606 §2). Each UPDATE counts
/// once, under the strongest approach its errors asked for (§3(h)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MalformedUpdates {
    /// Their routes count as withdrawn (Herald installs none: dropped).
    pub treat_as_withdraw: u64,
    /// Only malformed attributes were ignored.
    pub attribute_discard: u64,
    /// A malformed MP_REACH_NLRI/MP_UNREACH_NLRI disabled its family (RFC 4760 §7) for the session.
    pub afi_safi_disable: u64,
}

impl MalformedUpdates {
    pub fn count(&mut self, handling: ErrorHandling) {
        let counter = match handling {
            ErrorHandling::TreatAsWithdraw => &mut self.treat_as_withdraw,
            ErrorHandling::AttributeDiscard => &mut self.attribute_discard,
            ErrorHandling::AfiSafiDisable(..) => &mut self.afi_safi_disable,
        };
        *counter += 1;
    }
}
