//! What the responder reports to its owner (the election yields an address on a [`Conflict`]).

use std::fmt;
use std::net::IpAddr;

use crate::packet::MacAddr;

/// Something the caller must know about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The address is answered and announced from now on: its probe found no other owner, or it was announced
    /// without a probe ([`AnnounceMode::Immediately`](crate::AnnounceMode::Immediately)).
    Announced {
        ip: IpAddr,
        /// Whether a probe (RFC 5227 / DAD) passed first.
        probed: bool,
    },
    /// Another host claims the address.
    Conflict(Conflict),
    /// Another host (`mac`) probed the address while it was being probed before its first announcement: the probe
    /// starts over (at most [`PROBE_RESTARTS`](crate::responder::PROBE_RESTARTS) times, then the address is refused).
    ProbeRestarted {
        ip: IpAddr,
        mac: MacAddr,
        signal: ConflictSignal,
    },
    /// A check ([`Responder::check`](crate::Responder::check)) of an address this interface does not handle ended.
    Checked { ip: IpAddr, outcome: CheckOutcome },
}

/// How a check of an address ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Nobody answered the probes, and nobody claimed the address while they went out (RFC 5227 §2.1.1).
    Free,
    /// Another host answered or claimed the address (`signal` says how; an [`ConflictSignal::ArpProbe`] or
    /// [`ConflictSignal::DadProbe`] is another host probing for it at the same time, which claims nothing yet).
    Taken { mac: MacAddr, signal: ConflictSignal },
    /// The interface started or stopped handling the address itself before the check ended.
    Abandoned,
}

/// Another host (`mac`) claims `ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub ip: IpAddr,
    /// The other host's link-layer address.
    pub mac: MacAddr,
    /// The frame that revealed it.
    pub signal: ConflictSignal,
    /// `true` when the conflict was found by the probe before the first announcement: the address was refused and
    /// is no longer handled. `false` while announcing: the responder keeps answering until the caller withdraws
    /// (and, under [`ConflictPolicy::Defend`](crate::ConflictPolicy::Defend), has defended the address).
    pub refused: bool,
}

/// The kind of frame that revealed a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictSignal {
    /// An ARP reply with our address as sender.
    ArpReply,
    /// An ARP request with our address as sender (a gratuitous ARP when it is also the target).
    ArpRequest,
    /// An ARP probe (sender 0.0.0.0) for an address we are probing ourselves (RFC 5227 §2.1.1).
    ArpProbe,
    /// A Neighbor Advertisement for our address.
    NeighborAdvertisement,
    /// A Duplicate Address Detection solicitation for an address we are probing too (RFC 4862 §5.4.3). One for an
    /// announced address is answered, not a conflict (the prober claims nothing yet).
    DadProbe,
    /// A Neighbor Solicitation sent from our address.
    NeighborSolicitation,
}

impl fmt::Display for ConflictSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictSignal::ArpReply => "ARP reply",
            ConflictSignal::ArpRequest => "ARP request (gratuitous or from the address)",
            ConflictSignal::ArpProbe => "ARP probe for the same address",
            ConflictSignal::NeighborAdvertisement => "neighbor advertisement",
            ConflictSignal::DadProbe => "duplicate address detection probe",
            ConflictSignal::NeighborSolicitation => "neighbor solicitation from the address",
        })
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is claimed by {} ({})", self.ip, self.mac, self.signal)
    }
}
