//! The routes to announce, and each session's Adj-RIB-Out (RFC 4271 §3.2): what was sent, so that a change of the
//! table becomes a diff of UPDATEs, packed many prefixes per message.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::packet::update::{announce_updates, withdraw_updates};
use crate::packet::{Afi, LargeCommunity, Origin, OutboundAttributes, Update};

/// LOCAL_PREF sent on iBGP sessions (RFC 4271 §5.1.5 leaves the value to policy; 100 is every router's default).
pub const IBGP_LOCAL_PREF: u32 = 100;

/// Per-route policy chosen by the caller (e.g. per address pool): everything about a route but the session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutePolicy {
    /// RFC 1997 communities, `(asn << 16) | value`.
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
    pub med: Option<u32>,
    /// Overrides the session's source address as next hop (for prefixes of the same family).
    pub next_hop: Option<IpAddr>,
}

/// Every route the speaker announces, with its policy.
pub type RouteTable = BTreeMap<IpNet, RoutePolicy>;

/// What a session contributes to the attributes of its routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRouting {
    pub local_asn: u32,
    pub peer_asn: u32,
    /// Default next hops: configured, else the session's source address (for its own family).
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Families negotiated with the peer.
    pub families: Vec<Afi>,
}

impl SessionRouting {
    /// The attributes of `prefix` on this session, or why it cannot be announced here.
    pub fn resolve(&self, prefix: &IpNet, policy: &RoutePolicy) -> Result<OutboundAttributes, String> {
        let afi = afi_of(prefix);
        if !self.families.contains(&afi) {
            return Err(format!("the peer did not negotiate {} unicast", family_name(afi)));
        }
        let next_hop = match (prefix, policy.next_hop) {
            (IpNet::V4(_), Some(nh @ IpAddr::V4(_))) | (IpNet::V6(_), Some(nh @ IpAddr::V6(_))) => nh,
            (IpNet::V4(_), _) => IpAddr::V4(self.next_hop_v4.ok_or("no IPv4 next hop on this session: set one")?),
            (IpNet::V6(_), _) => IpAddr::V6(self.next_hop_v6.ok_or("no IPv6 next hop on this session: set one")?),
        };
        let ibgp = self.local_asn == self.peer_asn;
        Ok(OutboundAttributes {
            origin: Origin::Igp,
            // Design: eBGP AS_PATH = [local ASN] (RFC 4271 §5.1.2); iBGP an empty path and LOCAL_PREF.
            as_path: if ibgp { Vec::new() } else { vec![self.local_asn] },
            next_hop,
            med: policy.med,
            local_pref: ibgp.then_some(IBGP_LOCAL_PREF),
            communities: policy.communities.clone(),
            large_communities: policy.large_communities.clone(),
        })
    }
}

pub fn afi_of(prefix: &IpNet) -> Afi {
    match prefix {
        IpNet::V4(_) => Afi::IPV4,
        IpNet::V6(_) => Afi::IPV6,
    }
}

fn family_name(afi: Afi) -> &'static str {
    if afi == Afi::IPV4 { "IPv4" } else { "IPv6" }
}

/// The result of one [`AdjRibOut::sync`].
#[derive(Debug, Default)]
pub struct RibDiff {
    /// Withdrawals first, then announcements.
    pub updates: Vec<Update>,
    pub announced: usize,
    pub withdrawn: usize,
    /// Routes this session cannot carry, with the reason (logged once per change).
    pub skipped: Vec<(IpNet, String)>,
}

/// What one session has announced.
#[derive(Debug, Default)]
pub struct AdjRibOut {
    sent: BTreeMap<IpNet, OutboundAttributes>,
}

impl AdjRibOut {
    /// Number of prefixes currently announced.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// The session went down: the peer forgot everything.
    pub fn clear(&mut self) {
        self.sent.clear();
    }

    /// Brings the peer to `table`: withdraws what is gone, announces what is new or changed.
    pub fn sync(&mut self, table: &RouteTable, session: &SessionRouting, four_octet_as: bool) -> RibDiff {
        let mut diff = RibDiff::default();
        let mut wanted = BTreeMap::new();
        for (prefix, policy) in table {
            match session.resolve(prefix, policy) {
                Ok(attrs) => {
                    wanted.insert(*prefix, attrs);
                }
                Err(why) => diff.skipped.push((*prefix, why)),
            }
        }
        let gone: Vec<IpNet> = self.sent.keys().filter(|p| !wanted.contains_key(p)).copied().collect();
        let mut changed: BTreeMap<OutboundAttributes, Vec<IpNet>> = BTreeMap::new();
        for (prefix, attrs) in &wanted {
            if self.sent.get(prefix) != Some(attrs) {
                changed.entry(attrs.clone()).or_default().push(*prefix);
            }
        }
        for family in [Afi::IPV4, Afi::IPV6] {
            let run: Vec<IpNet> = gone.iter().filter(|p| afi_of(p) == family).copied().collect();
            diff.updates.extend(withdraw_updates(&run));
        }
        diff.withdrawn = gone.len();
        for (attrs, prefixes) in &changed {
            diff.updates.extend(announce_updates(attrs, prefixes, four_octet_as));
            diff.announced += prefixes.len();
        }
        self.sent = wanted;
        diff
    }

    /// Everything announced for `afi` again (RFC 2918 route refresh), grouped by attributes.
    pub fn resend(&self, afi: Afi, four_octet_as: bool) -> Vec<Update> {
        let mut groups: BTreeMap<&OutboundAttributes, Vec<IpNet>> = BTreeMap::new();
        for (prefix, attrs) in self.sent.iter().filter(|(p, _)| afi_of(p) == afi) {
            groups.entry(attrs).or_default().push(*prefix);
        }
        groups.into_iter().flat_map(|(attrs, prefixes)| announce_updates(attrs, &prefixes, four_octet_as)).collect()
    }
}
