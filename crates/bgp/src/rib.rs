//! The routes to announce, and each session's Adj-RIB-Out (RFC 4271 §3.2): what was sent, so that a change of the
//! table becomes a diff of UPDATEs, packed many prefixes per message.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

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

/// Parses a standard community `ASN:VALUE` (RFC 1997) into its 32-bit value; the error says what was expected.
pub fn parse_community(s: &str) -> Result<u32, String> {
    let err = || format!("`{s}` is not a community: expected ASN:VALUE with both parts 0-65535");
    let (a, v) = s.split_once(':').ok_or_else(err)?;
    let a: u16 = a.parse().map_err(|_| err())?;
    let v: u16 = v.parse().map_err(|_| err())?;
    Ok((u32::from(a) << 16) | u32::from(v))
}

/// Parses a large community `GLOBAL:DATA1:DATA2` (RFC 8092).
pub fn parse_large_community(s: &str) -> Result<LargeCommunity, String> {
    let err = || format!("`{s}` is not a large community: expected GLOBAL:DATA1:DATA2, each 0-4294967295");
    let parts: Vec<u32> = s
        .split(':')
        .map(|p| p.parse().map_err(|_| err()))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [g, a, b] => Ok(LargeCommunity(g, a, b)),
        _ => Err(err()),
    }
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
    /// Families configured for the peer: routes of other families are left out without a warning.
    pub configured_families: Vec<Afi>,
}

impl SessionRouting {
    /// The peer is in our AS.
    pub fn ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }

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
        let ibgp = self.ibgp();
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

/// What one session has announced. Attributes are shared between the prefixes that carry the same ones (one
/// allocation per pool policy and family, not per prefix).
#[derive(Debug, Default)]
pub struct AdjRibOut {
    sent: BTreeMap<IpNet, Arc<OutboundAttributes>>,
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
        let mut resolved: BTreeMap<(Afi, &RoutePolicy), Result<Arc<OutboundAttributes>, String>> = BTreeMap::new();
        for (prefix, policy) in table {
            if !session.configured_families.contains(&afi_of(prefix)) {
                continue;
            }
            let attrs = resolved
                .entry((afi_of(prefix), policy))
                .or_insert_with(|| session.resolve(prefix, policy).map(Arc::new));
            match attrs {
                Ok(attrs) => {
                    wanted.insert(*prefix, Arc::clone(attrs));
                }
                Err(why) => diff.skipped.push((*prefix, why.clone())),
            }
        }
        let gone: Vec<IpNet> = self.sent.keys().filter(|p| !wanted.contains_key(p)).copied().collect();
        let mut changed: BTreeMap<&OutboundAttributes, Vec<IpNet>> = BTreeMap::new();
        for (prefix, attrs) in &wanted {
            if self.sent.get(prefix) != Some(attrs) {
                changed.entry(attrs).or_default().push(*prefix);
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
        drop(changed);
        self.sent = wanted;
        diff
    }

    /// Everything announced for `afi` again (RFC 2918 route refresh), grouped by attributes.
    pub fn resend(&self, afi: Afi, four_octet_as: bool) -> Vec<Update> {
        let mut groups: BTreeMap<&OutboundAttributes, Vec<IpNet>> = BTreeMap::new();
        for (prefix, attrs) in self.sent.iter().filter(|(p, _)| afi_of(p) == afi) {
            groups.entry(&**attrs).or_default().push(*prefix);
        }
        groups
            .into_iter()
            .flat_map(|(attrs, prefixes)| announce_updates(attrs, &prefixes, four_octet_as))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PathAttribute;

    fn session(peer_asn: u32) -> SessionRouting {
        SessionRouting {
            local_asn: 64512,
            peer_asn,
            next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 11)),
            next_hop_v6: None,
            families: vec![Afi::IPV4, Afi::IPV6],
            configured_families: vec![Afi::IPV4, Afi::IPV6],
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ebgp_path_is_the_local_asn_and_ibgp_gets_local_pref() {
        let ebgp = session(64500)
            .resolve(&net("203.0.113.1/32"), &RoutePolicy::default())
            .unwrap();
        assert_eq!(ebgp.as_path, vec![64512]);
        assert_eq!(ebgp.local_pref, None);
        let ibgp = session(64512)
            .resolve(&net("203.0.113.1/32"), &RoutePolicy::default())
            .unwrap();
        assert!(ibgp.as_path.is_empty());
        assert_eq!(ibgp.local_pref, Some(IBGP_LOCAL_PREF));
    }

    #[test]
    fn next_hop_comes_from_policy_then_session_and_must_match_the_family() {
        let s = session(64500);
        let policy = RoutePolicy {
            next_hop: Some("192.0.2.99".parse().unwrap()),
            ..RoutePolicy::default()
        };
        assert_eq!(
            s.resolve(&net("203.0.113.1/32"), &policy).unwrap().next_hop,
            "192.0.2.99".parse::<IpAddr>().unwrap()
        );
        let err = s.resolve(&net("2001:db8::/64"), &policy).unwrap_err();
        assert!(err.contains("no IPv6 next hop"), "{err}");
        let mut v4_only = s.clone();
        v4_only.families = vec![Afi::IPV4];
        v4_only.next_hop_v6 = Some("2001:db8::11".parse().unwrap());
        assert!(
            v4_only
                .resolve(&net("2001:db8::/64"), &RoutePolicy::default())
                .unwrap_err()
                .contains("IPv6 unicast")
        );
    }

    #[test]
    fn sync_sends_only_differences_and_withdraws_what_is_gone() {
        let s = session(64500);
        let mut rib = AdjRibOut::default();
        let mut table = RouteTable::new();
        table.insert(net("203.0.113.1/32"), RoutePolicy::default());
        table.insert(net("203.0.113.2/32"), RoutePolicy::default());
        let d = rib.sync(&table, &s, true);
        assert_eq!((d.announced, d.withdrawn, d.updates.len()), (2, 0, 1));
        assert!(rib.sync(&table, &s, true).updates.is_empty(), "no change, no UPDATE");

        table.remove(&net("203.0.113.1/32"));
        table.insert(
            net("203.0.113.2/32"),
            RoutePolicy {
                communities: vec![1],
                ..RoutePolicy::default()
            },
        );
        let d = rib.sync(&table, &s, true);
        assert_eq!((d.announced, d.withdrawn), (1, 1));
        assert_eq!(
            d.updates[0].withdrawn,
            vec!["203.0.113.1/32".parse().unwrap()],
            "withdrawals go first"
        );
        assert!(d.updates[1].attributes.contains(&PathAttribute::Communities(vec![1])));
        assert_eq!(rib.len(), 1);

        let resent = rib.resend(Afi::IPV4, true);
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].nlri, vec!["203.0.113.2/32".parse().unwrap()]);
    }

    #[test]
    fn unconfigured_families_are_left_out_silently() {
        let mut s = session(64500);
        s.next_hop_v6 = Some("2001:db8::11".parse().unwrap());
        s.configured_families = vec![Afi::IPV4];
        let mut table = RouteTable::new();
        table.insert(net("203.0.113.1/32"), RoutePolicy::default());
        table.insert(net("2001:db8:10::/64"), RoutePolicy::default());
        let mut rib = AdjRibOut::default();
        let d = rib.sync(&table, &s, true);
        assert_eq!(d.announced, 1);
        assert!(d.skipped.is_empty(), "not a warning: {:?}", d.skipped);
        assert!(
            d.updates
                .iter()
                .all(|u| u.attributes.iter().all(|a| !matches!(a, PathAttribute::MpReach { .. })))
        );
        assert_eq!(rib.len(), 1);
    }
}
