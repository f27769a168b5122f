//! NOTIFICATION (RFC 4271 §4.5) and its error codes and subcodes, typed after the IANA registries ("BGP Error
//! (Notification) Codes" and the subcode registry of each code).
//!
//! A router may send codes this speaker does not know: every registry keeps them as `Unknown(u8)`, so decoding never
//! fails on them and `u8 → typed → u8` gives back the octet received. [`Notification`] itself holds the two octets as
//! they are on the wire; [`Notification::kind`] types them.

use std::fmt;

/// A registry of one-octet values: the named ones, and `Unknown(u8)` for any other, converting both ways without loss.
macro_rules! registry {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value the registry does not name here, kept as received.
            Unknown(u8),
        }

        impl $name {
            /// Every named value, in registry order.
            pub const KNOWN: &[$name] = &[$($name::$variant),*];

            /// The registry's name, `None` for [`Self::Unknown`].
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($name::$variant => Some($text),)*
                    $name::Unknown(_) => None,
                }
            }
        }

        impl From<u8> for $name {
            fn from(value: u8) -> Self {
                match value {
                    $($value => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                match value {
                    $($name::$variant => $value,)*
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

registry! {
    /// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313 §5).
    pub enum ErrorCode {
        MessageHeader = 1 => "Message Header Error",
        Open = 2 => "OPEN Message Error",
        Update = 3 => "UPDATE Message Error",
        HoldTimerExpired = 4 => "Hold Timer Expired",
        Fsm = 5 => "Finite State Machine Error",
        Cease = 6 => "Cease",
        RouteRefresh = 7 => "ROUTE-REFRESH Message Error",
    }
}

registry! {
    /// Message Header Error subcodes (RFC 4271 §6.1; 0 is "Unspecific", RFC 4271 §4.5).
    pub enum HeaderSubcode {
        Unspecific = 0 => "Unspecific",
        ConnectionNotSynchronized = 1 => "Connection Not Synchronized",
        BadMessageLength = 2 => "Bad Message Length",
        BadMessageType = 3 => "Bad Message Type",
    }
}

registry! {
    /// OPEN Message Error subcodes (RFC 4271 §6.2, RFC 5492 §5). 5 and 8-10 are deprecated.
    pub enum OpenSubcode {
        Unspecific = 0 => "Unspecific",
        UnsupportedVersionNumber = 1 => "Unsupported Version Number",
        BadPeerAs = 2 => "Bad Peer AS",
        BadBgpIdentifier = 3 => "Bad BGP Identifier",
        UnsupportedOptionalParameter = 4 => "Unsupported Optional Parameter",
        UnacceptableHoldTime = 6 => "Unacceptable Hold Time",
        UnsupportedCapability = 7 => "Unsupported Capability",
    }
}

registry! {
    /// UPDATE Message Error subcodes (RFC 4271 §6.3). 7 (AS Routing Loop) is deprecated.
    pub enum UpdateSubcode {
        Unspecific = 0 => "Unspecific",
        MalformedAttributeList = 1 => "Malformed Attribute List",
        UnrecognizedWellKnownAttribute = 2 => "Unrecognized Well-known Attribute",
        MissingWellKnownAttribute = 3 => "Missing Well-known Attribute",
        AttributeFlagsError = 4 => "Attribute Flags Error",
        AttributeLengthError = 5 => "Attribute Length Error",
        InvalidOriginAttribute = 6 => "Invalid ORIGIN Attribute",
        InvalidNextHopAttribute = 8 => "Invalid NEXT_HOP Attribute",
        OptionalAttributeError = 9 => "Optional Attribute Error",
        InvalidNetworkField = 10 => "Invalid Network Field",
        MalformedAsPath = 11 => "Malformed AS_PATH",
    }
}

registry! {
    /// Finite State Machine Error subcodes (RFC 6608 §3).
    pub enum FsmSubcode {
        Unspecified = 0 => "Unspecified Error",
        UnexpectedInOpenSent = 1 => "Unexpected Message in OpenSent",
        UnexpectedInOpenConfirm = 2 => "Unexpected Message in OpenConfirm",
        UnexpectedInEstablished = 3 => "Unexpected Message in Established",
    }
}

registry! {
    /// Cease subcodes (RFC 4486 §4; Administrative Shutdown and Reset may carry a communication, RFC 8203 and
    /// RFC 9003; Hard Reset, RFC 8538 §5; BFD Down, RFC 9384 §2). 0 is reserved.
    pub enum CeaseSubcode {
        MaxPrefixesReached = 1 => "Maximum Number of Prefixes Reached",
        AdministrativeShutdown = 2 => "Administrative Shutdown",
        PeerDeconfigured = 3 => "Peer De-configured",
        AdministrativeReset = 4 => "Administrative Reset",
        ConnectionRejected = 5 => "Connection Rejected",
        OtherConfigurationChange = 6 => "Other Configuration Change",
        ConnectionCollisionResolution = 7 => "Connection Collision Resolution",
        OutOfResources = 8 => "Out of Resources",
        HardReset = 9 => "Hard Reset",
        BfdDown = 10 => "BFD Down",
    }
}

registry! {
    /// ROUTE-REFRESH Message Error subcodes (RFC 7313 §5). 0 is reserved.
    pub enum RouteRefreshSubcode {
        InvalidMessageLength = 1 => "Invalid Message Length",
    }
}

/// A NOTIFICATION's error code and subcode, typed: `match` on it is exhaustive, and it displays as
/// `Cease / Administrative Shutdown`. Built from the wire octets by [`ErrorKind::from_wire`], which never fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    MessageHeader(HeaderSubcode),
    Open(OpenSubcode),
    Update(UpdateSubcode),
    /// RFC 4271 §6.5 defines no subcodes: the octet is kept as received (normally 0).
    HoldTimerExpired(u8),
    Fsm(FsmSubcode),
    Cease(CeaseSubcode),
    RouteRefresh(RouteRefreshSubcode),
    /// An error code not in [`ErrorCode`], with its subcode.
    Unknown {
        code: u8,
        subcode: u8,
    },
}

impl ErrorKind {
    /// Types a code and subcode as received; unknown values become `Unknown`, never an error.
    pub fn from_wire(code: u8, subcode: u8) -> ErrorKind {
        match ErrorCode::from(code) {
            ErrorCode::MessageHeader => ErrorKind::MessageHeader(subcode.into()),
            ErrorCode::Open => ErrorKind::Open(subcode.into()),
            ErrorCode::Update => ErrorKind::Update(subcode.into()),
            ErrorCode::HoldTimerExpired => ErrorKind::HoldTimerExpired(subcode),
            ErrorCode::Fsm => ErrorKind::Fsm(subcode.into()),
            ErrorCode::Cease => ErrorKind::Cease(subcode.into()),
            ErrorCode::RouteRefresh => ErrorKind::RouteRefresh(subcode.into()),
            ErrorCode::Unknown(code) => ErrorKind::Unknown { code, subcode },
        }
    }

    /// The (code, subcode) octets.
    pub fn to_wire(self) -> (u8, u8) {
        (u8::from(self.code()), self.subcode())
    }

    pub fn code(self) -> ErrorCode {
        match self {
            ErrorKind::MessageHeader(_) => ErrorCode::MessageHeader,
            ErrorKind::Open(_) => ErrorCode::Open,
            ErrorKind::Update(_) => ErrorCode::Update,
            ErrorKind::HoldTimerExpired(_) => ErrorCode::HoldTimerExpired,
            ErrorKind::Fsm(_) => ErrorCode::Fsm,
            ErrorKind::Cease(_) => ErrorCode::Cease,
            ErrorKind::RouteRefresh(_) => ErrorCode::RouteRefresh,
            ErrorKind::Unknown { code, .. } => ErrorCode::from(code),
        }
    }

    pub fn subcode(self) -> u8 {
        match self {
            ErrorKind::MessageHeader(s) => s.into(),
            ErrorKind::Open(s) => s.into(),
            ErrorKind::Update(s) => s.into(),
            ErrorKind::HoldTimerExpired(s) => s,
            ErrorKind::Fsm(s) => s.into(),
            ErrorKind::Cease(s) => s.into(),
            ErrorKind::RouteRefresh(s) => s.into(),
            ErrorKind::Unknown { subcode, .. } => subcode,
        }
    }

    /// The subcode's name, when its registry has one for it (an unspecific subcode 0 is not worth naming in logs).
    fn subcode_name(self) -> Option<&'static str> {
        match self {
            ErrorKind::MessageHeader(HeaderSubcode::Unspecific)
            | ErrorKind::Open(OpenSubcode::Unspecific)
            | ErrorKind::Update(UpdateSubcode::Unspecific)
            | ErrorKind::Fsm(FsmSubcode::Unspecified) => None,
            ErrorKind::MessageHeader(s) => s.name(),
            ErrorKind::Open(s) => s.name(),
            ErrorKind::Update(s) => s.name(),
            ErrorKind::Fsm(s) => s.name(),
            ErrorKind::Cease(s) => s.name(),
            ErrorKind::RouteRefresh(s) => s.name(),
            ErrorKind::HoldTimerExpired(_) | ErrorKind::Unknown { .. } => None,
        }
    }
}

/// `Cease / Administrative Shutdown`, `UPDATE Message Error`, `Unknown error code`.
impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code().name().unwrap_or("Unknown error code"))?;
        match self.subcode_name() {
            Some(sub) => write!(f, " / {sub}"),
            None => Ok(()),
        }
    }
}

macro_rules! kind_from_subcode {
    ($($subcode:ident => $variant:ident,)*) => {
        $(impl From<$subcode> for ErrorKind {
            fn from(subcode: $subcode) -> ErrorKind {
                ErrorKind::$variant(subcode)
            }
        })*
    };
}

kind_from_subcode! {
    HeaderSubcode => MessageHeader,
    OpenSubcode => Open,
    UpdateSubcode => Update,
    FsmSubcode => Fsm,
    CeaseSubcode => Cease,
    RouteRefreshSubcode => RouteRefresh,
}

/// NOTIFICATION (RFC 4271 §4.5). `code` and `subcode` are the octets as on the wire, so what a router sent is kept
/// as it was and compares by value; [`Notification::kind`] types them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION without data: `Notification::new(CeaseSubcode::PeerDeconfigured)`.
    pub fn new(kind: impl Into<ErrorKind>) -> Self {
        Self::with_data(kind, Vec::new())
    }

    pub fn with_data(kind: impl Into<ErrorKind>, data: Vec<u8>) -> Self {
        let (code, subcode) = kind.into().to_wire();
        Notification { code, subcode, data }
    }

    /// The error code and subcode, typed.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_wire(self.code, self.subcode)
    }

    /// Cease with an RFC 9003 shutdown communication (for Administrative Shutdown/Reset).
    pub fn cease(subcode: CeaseSubcode, communication: &str) -> Self {
        let mut text = communication.as_bytes();
        // RFC 9003 §2: at most 255 octets of UTF-8; cut at a char boundary.
        let mut n = text.len().min(255);
        while !communication.is_char_boundary(n) {
            n -= 1;
        }
        text = &text[..n];
        let mut data = vec![text.len() as u8];
        data.extend(text);
        Self::with_data(subcode, data)
    }

    /// A human description: `"Cease / Administrative Shutdown (6/2): maintenance"`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} ({}/{})", self.kind(), self.code, self.subcode);
        if let Some(text) = self.shutdown_communication() {
            s.push_str(": ");
            s.push_str(&text);
        }
        s
    }

    /// RFC 9003 §2: the UTF-8 text in an Administrative Shutdown/Reset, if the data is one.
    pub fn shutdown_communication(&self) -> Option<String> {
        let is_shutdown = matches!(
            self.kind(),
            ErrorKind::Cease(CeaseSubcode::AdministrativeShutdown | CeaseSubcode::AdministrativeReset)
        );
        let (&len, text) = self.data.split_first()?;
        if !is_shutdown || len == 0 || usize::from(len) != text.len() {
            return None;
        }
        std::str::from_utf8(text).ok().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (code, subcode) pair, known or not, comes back as the same octets.
    #[test]
    fn every_code_and_subcode_round_trips() {
        for code in 0..=u8::MAX {
            for subcode in 0..=u8::MAX {
                let kind = ErrorKind::from_wire(code, subcode);
                assert_eq!(kind.to_wire(), (code, subcode), "{kind:?}");
                let n = Notification {
                    code,
                    subcode,
                    data: vec![],
                };
                assert_eq!(Notification::new(n.kind()), n);
            }
        }
    }

    #[test]
    fn every_known_value_round_trips_to_itself() {
        fn check<T: Copy + std::fmt::Debug + PartialEq + From<u8> + Into<u8>>(known: &[T]) {
            for &v in known {
                assert_eq!(T::from(v.into()), v, "{v:?}");
            }
        }
        check(ErrorCode::KNOWN);
        check(HeaderSubcode::KNOWN);
        check(OpenSubcode::KNOWN);
        check(UpdateSubcode::KNOWN);
        check(FsmSubcode::KNOWN);
        check(CeaseSubcode::KNOWN);
        check(RouteRefreshSubcode::KNOWN);
        // The codes are the RFC 4271 §4.5 and RFC 7313 §5 numbers.
        let codes: Vec<u8> = ErrorCode::KNOWN.iter().map(|&c| c.into()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7]);
        let cease: Vec<u8> = CeaseSubcode::KNOWN.iter().map(|&c| c.into()).collect();
        assert_eq!(cease, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn unknown_values_stay_representable() {
        assert_eq!(ErrorCode::from(0), ErrorCode::Unknown(0));
        assert_eq!(ErrorCode::from(200), ErrorCode::Unknown(200));
        assert_eq!(u8::from(ErrorCode::Unknown(200)), 200);
        assert_eq!(ErrorKind::from_wire(6, 0), ErrorKind::Cease(CeaseSubcode::Unknown(0)));
        assert_eq!(ErrorKind::from_wire(6, 77), ErrorKind::Cease(CeaseSubcode::Unknown(77)));
        assert_eq!(ErrorKind::from_wire(9, 3), ErrorKind::Unknown { code: 9, subcode: 3 });
        assert_eq!(ErrorKind::from_wire(4, 0), ErrorKind::HoldTimerExpired(0));
    }

    #[test]
    fn descriptions_name_code_and_subcode() {
        let describe = |code, subcode| {
            Notification {
                code,
                subcode,
                data: vec![],
            }
            .describe()
        };
        assert_eq!(
            Notification::cease(CeaseSubcode::AdministrativeShutdown, "maintenance").describe(),
            "Cease / Administrative Shutdown (6/2): maintenance"
        );
        assert_eq!(describe(6, 7), "Cease / Connection Collision Resolution (6/7)");
        assert_eq!(describe(6, 0), "Cease (6/0)");
        assert_eq!(describe(6, 99), "Cease (6/99)");
        assert_eq!(describe(1, 2), "Message Header Error / Bad Message Length (1/2)");
        assert_eq!(describe(2, 0), "OPEN Message Error (2/0)");
        assert_eq!(describe(2, 6), "OPEN Message Error / Unacceptable Hold Time (2/6)");
        assert_eq!(describe(3, 11), "UPDATE Message Error / Malformed AS_PATH (3/11)");
        assert_eq!(describe(4, 0), "Hold Timer Expired (4/0)");
        assert_eq!(
            describe(5, 2),
            "Finite State Machine Error / Unexpected Message in OpenConfirm (5/2)"
        );
        assert_eq!(
            describe(7, 1),
            "ROUTE-REFRESH Message Error / Invalid Message Length (7/1)"
        );
        assert_eq!(describe(42, 1), "Unknown error code (42/1)");
        // Every known pair has a name of its own.
        for &code in ErrorCode::KNOWN {
            assert!(!describe(code.into(), 1).starts_with("Unknown"));
        }
    }

    #[test]
    fn a_shutdown_communication_is_cut_at_255_octets_on_a_char_boundary() {
        let long = "é".repeat(200);
        let n = Notification::cease(CeaseSubcode::AdministrativeReset, &long);
        assert_eq!(n.data[0], 254);
        assert_eq!(n.shutdown_communication().map(|s| s.chars().count()), Some(127));
        // Only Administrative Shutdown and Reset carry one.
        let other = Notification::with_data(CeaseSubcode::PeerDeconfigured, n.data.clone());
        assert_eq!(other.shutdown_communication(), None);
    }
}
