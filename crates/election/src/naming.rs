//! Lease names and labels.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::{Error, Result};

// The names themselves live with every other name Herald writes, in `herald_api::names`.
pub use herald_api::names::{
    ALLOCATOR_LEASE, IP_LEASE_PREFIX, LABEL_LEASE_EIP as EIP_LABEL, LABEL_LEASE_IP as IP_LABEL,
    LABEL_LEASE_KIND as LEASE_KIND_LABEL, LABEL_LEASE_NODE as NODE_LABEL, NODE_LEASE_PREFIX,
};

/// `herald-node-<node>`.
pub fn node_lease_name(node: &str) -> String {
    format!("{NODE_LEASE_PREFIX}{node}")
}

/// The node a node-lease name belongs to.
pub fn node_of_lease(name: &str) -> Option<&str> {
    name.strip_prefix(NODE_LEASE_PREFIX).filter(|n| !n.is_empty())
}

/// The IP written with `.` and `:` as `-`, from the RFC 5952 text form (`192-0-2-1`, `2001-db8--1`).
///
/// Names and label values must start and end with an alphanumeric, so a leading `-` (`::1`) gets a `0` in front and
/// a trailing `-` (`2001:db8::`) a `0` behind. This stays injective: RFC 5952 text never starts with `0::` or ends
/// with `::0`. IPv4-mapped IPv6 addresses are refused (their text mixes `.` and `:` and could collide with a
/// pure IPv6 address; a LoadBalancer IP is never one).
pub fn ip_slug(ip: IpAddr) -> Result<String> {
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(Error::InvalidIp {
            ip,
            reason: "IPv4-mapped IPv6 addresses cannot be announced; use the IPv4 address",
        });
    }
    let mut s: String = ip
        .to_string()
        .chars()
        .map(|c| if c == '.' || c == ':' { '-' } else { c })
        .collect();
    if s.starts_with('-') {
        s.insert(0, '0');
    }
    if s.ends_with('-') {
        s.push('0');
    }
    Ok(s)
}

/// `herald-ip-<slug>`.
pub fn ip_lease_name(ip: IpAddr) -> Result<String> {
    Ok(format!("{IP_LEASE_PREFIX}{}", ip_slug(ip)?))
}

/// Labels of an IP lease. The Eip label is left out when the Eip name is not a valid label value (longer than 63).
pub fn ip_lease_labels(ip: IpAddr, eip: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::from([
        (LEASE_KIND_LABEL.to_owned(), "ip".to_owned()),
        (IP_LABEL.to_owned(), ip_slug(ip)?),
    ]);
    if is_label_value(eip) && !eip.is_empty() {
        labels.insert(EIP_LABEL.to_owned(), eip.to_owned());
    }
    Ok(labels)
}

/// Labels of a node lease.
pub fn node_lease_labels(node: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(LEASE_KIND_LABEL.to_owned(), "node".to_owned())]);
    if is_label_value(node) {
        labels.insert(NODE_LABEL.to_owned(), node.to_owned());
    }
    labels
}

/// RFC 1123 subdomain as Kubernetes checks object names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Kubernetes label value: at most 63 characters, alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
pub fn is_label_value(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && (s.is_empty() || (alnum(s.chars().next()) && alnum(s.chars().last())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn slugs_are_valid_names_and_labels() {
        for (addr, slug) in [
            ("192.0.2.1", "192-0-2-1"),
            ("2001:db8::1", "2001-db8--1"),
            ("::1", "0--1"),
            ("2001:db8::", "2001-db8--0"),
            ("2001:db8:0:1:2:3:4:5", "2001-db8-0-1-2-3-4-5"),
        ] {
            let s = ip_slug(ip(addr)).unwrap();
            assert_eq!(s, slug);
            assert!(is_label_value(&s), "{s}");
            assert!(is_dns_subdomain(&ip_lease_name(ip(addr)).unwrap()), "{s}");
        }
        assert!(ip_slug(ip("::ffff:192.0.2.1")).is_err());
    }

    #[test]
    fn labels_name_kind_ip_and_eip() {
        let l = ip_lease_labels(ip("198.51.100.7"), "pool-a").unwrap();
        assert_eq!(l[LEASE_KIND_LABEL], "ip");
        assert_eq!(l[IP_LABEL], "198-51-100-7");
        assert_eq!(l[EIP_LABEL], "pool-a");
        let l = ip_lease_labels(ip("198.51.100.7"), &"x".repeat(64)).unwrap();
        assert!(!l.contains_key(EIP_LABEL));
        assert_eq!(node_of_lease(&node_lease_name("n1")), Some("n1"));
        assert_eq!(node_of_lease("herald-ip-1-2-3-4"), None);
    }
}
