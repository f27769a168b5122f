//! The OPEN we send, and the checks and negotiation of the one we receive (RFC 4271 §6.2, RFC 5492, RFC 6793,
//! RFC 4724).

use super::{Negotiated, SessionFsm};
use crate::packet::wire::AS_TRANS;
use crate::packet::{Afi, Capability, Notification, Open, OpenSubcode, Safi};

impl SessionFsm {
    /// The OPEN we send (RFC 4271 §4.2, capabilities per RFC 5492).
    pub fn open_message(&self) -> Open {
        let c = &self.config;
        let mut capabilities: Vec<Capability> = c
            .families
            .iter()
            .map(|&afi| Capability::Multiprotocol {
                afi,
                safi: Safi::UNICAST,
            })
            .collect();
        capabilities.push(Capability::RouteRefresh);
        if let Some(gr) = c.graceful_restart {
            capabilities.push(Capability::GracefulRestart {
                restarting: gr.restarting,
                restart_time: gr.restart_time.min(0x0fff),
                // F bit set: our "forwarding state" is the node's kernel, which a speaker restart does not touch.
                families: c.families.iter().map(|&afi| (afi, Safi::UNICAST, true)).collect(),
            });
        }
        capabilities.push(Capability::FourOctetAs(c.local_asn));
        Open {
            version: 4,
            my_as: u16::try_from(c.local_asn).unwrap_or(AS_TRANS),
            hold_time: c.hold_time,
            bgp_id: c.router_id,
            capabilities,
        }
    }

    /// RFC 4271 §6.2 checks that need the configuration, then negotiation. An error is the NOTIFICATION to send and
    /// why.
    pub(super) fn check_open(&self, open: &Open) -> Result<Negotiated, (Notification, String)> {
        let c = &self.config;
        let reject = |sub: OpenSubcode, data: Vec<u8>, why: String| Err((Notification::with_data(sub, data), why));
        if open.hold_time == 1 || open.hold_time == 2 {
            let why = format!("peer proposed hold time {}s (must be 0 or at least 3)", open.hold_time);
            return reject(OpenSubcode::UnacceptableHoldTime, Vec::new(), why);
        }
        if open.my_as == AS_TRANS && open.four_octet_as().is_none() && c.peer_asn > u32::from(u16::MAX) {
            // RFC 5492 §3: we need the 4-octet ASN capability to know who the peer is.
            let mut data = Vec::new();
            Capability::FourOctetAs(c.peer_asn).encode(&mut data);
            let why = format!(
                "peer sent AS_TRANS without the 4-octet ASN capability, expected AS {}",
                c.peer_asn
            );
            return reject(OpenSubcode::UnsupportedCapability, data, why);
        }
        if open.asn() != c.peer_asn {
            let why = format!("peer is AS {}, configured peer ASN is {}", open.asn(), c.peer_asn);
            return reject(OpenSubcode::BadPeerAs, open.my_as.to_be_bytes().to_vec(), why);
        }
        let id = open.bgp_id;
        // RFC 6286 §2.2: the identifier is a non-zero value; equal identifiers are only an error within one AS.
        if id.is_unspecified()
            || id.is_multicast()
            || id.is_broadcast()
            || (c.peer_asn == c.local_asn && id == c.router_id)
        {
            let why = format!("peer BGP identifier {id} is invalid or equals ours");
            return reject(OpenSubcode::BadBgpIdentifier, id.octets().to_vec(), why);
        }
        let mut families = Vec::new();
        let mut any_mp = false;
        for cap in &open.capabilities {
            if let Capability::Multiprotocol { afi, safi } = cap {
                any_mp = true;
                if *safi == Safi::UNICAST && c.families.contains(afi) && !families.contains(afi) {
                    families.push(*afi);
                }
            }
        }
        if !any_mp && c.families.contains(&Afi::IPV4) {
            families.push(Afi::IPV4);
        }
        families.sort();
        Ok(Negotiated {
            peer_asn: open.asn(),
            peer_id: id,
            hold_time: c.hold_time.min(open.hold_time),
            keepalive_time: c.keepalive_time,
            four_octet_as: open.four_octet_as().is_some(),
            families,
            route_refresh: open.capabilities.contains(&Capability::RouteRefresh),
            peer_graceful_restart: open
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::GracefulRestart { .. })),
        })
    }
}
