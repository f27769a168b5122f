//! Capabilities Optional Parameter (RFC 5492) and the capabilities Herald speaks.

use super::wire::{Afi, Safi};

/// Capability codes (IANA "Capability Codes").
pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// One capability from an OPEN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760 §8.
    Multiprotocol { afi: Afi, safi: Safi },
    /// RFC 2918 §2.
    RouteRefresh,
    /// RFC 4724 §3. `restarting` is the R bit; each family carries its F (forwarding state preserved) bit.
    GracefulRestart {
        restarting: bool,
        restart_time: u16,
        families: Vec<(Afi, Safi, bool)>,
    },
    /// RFC 6793 §3.
    FourOctetAs(u32),
    /// Anything else: kept so it can be logged, otherwise ignored (RFC 5492 §3).
    Unknown { code: u8, value: Vec<u8> },
}

impl Capability {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let (code, value): (u8, Vec<u8>) = match self {
            Capability::Multiprotocol { afi, safi } => {
                let mut v = afi.0.to_be_bytes().to_vec();
                v.extend([0, safi.0]);
                (cap_code::MULTIPROTOCOL, v)
            }
            Capability::RouteRefresh => (cap_code::ROUTE_REFRESH, Vec::new()),
            Capability::GracefulRestart {
                restarting,
                restart_time,
                families,
            } => {
                let flags_time = (u16::from(*restarting) << 15) | (restart_time & 0x0fff);
                let mut v = flags_time.to_be_bytes().to_vec();
                for (afi, safi, forwarding) in families {
                    v.extend(afi.0.to_be_bytes());
                    v.extend([safi.0, if *forwarding { 0x80 } else { 0 }]);
                }
                (cap_code::GRACEFUL_RESTART, v)
            }
            Capability::FourOctetAs(asn) => (cap_code::FOUR_OCTET_AS, asn.to_be_bytes().to_vec()),
            Capability::Unknown { code, value } => (*code, value.clone()),
        };
        out.push(code);
        out.push(value.len() as u8);
        out.extend(value);
    }

    /// Decodes one capability's value. A known capability with a wrong length is kept as `Unknown`: RFC 5492 does
    /// not make that an OPEN error, and we only rely on the ones we can read.
    pub(crate) fn decode(code: u8, value: &[u8]) -> Capability {
        let unknown = || Capability::Unknown {
            code,
            value: value.to_vec(),
        };
        match code {
            cap_code::MULTIPROTOCOL if value.len() == 4 => Capability::Multiprotocol {
                afi: Afi(u16::from_be_bytes([value[0], value[1]])),
                safi: Safi(value[3]),
            },
            cap_code::ROUTE_REFRESH if value.is_empty() => Capability::RouteRefresh,
            cap_code::GRACEFUL_RESTART if value.len() >= 2 && (value.len() - 2).is_multiple_of(4) => {
                let flags_time = u16::from_be_bytes([value[0], value[1]]);
                let families = value[2..]
                    .chunks_exact(4)
                    .map(|c| (Afi(u16::from_be_bytes([c[0], c[1]])), Safi(c[2]), c[3] & 0x80 != 0))
                    .collect();
                Capability::GracefulRestart {
                    restarting: flags_time & 0x8000 != 0,
                    restart_time: flags_time & 0x0fff,
                    families,
                }
            }
            cap_code::FOUR_OCTET_AS if value.len() == 4 => {
                Capability::FourOctetAs(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
            }
            _ => unknown(),
        }
    }
}
