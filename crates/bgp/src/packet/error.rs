//! Decode errors, each mapped to the NOTIFICATION (RFC 4271 §4.5, §6) the peer must be sent.

use std::fmt;

use super::notification::{ErrorKind, Notification};

/// A message from a peer that we could not accept. Carries the NOTIFICATION to answer it with; the session is then
/// reset (RFC 4271 §6: "the BGP connection is closed").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub notification: Notification,
    /// What was wrong, for logs and the peer's `last_error`.
    pub reason: String,
}

impl DecodeError {
    /// `kind` is a subcode of the code it belongs to, e.g. `HeaderSubcode::BadMessageLength`.
    pub(crate) fn new(kind: impl Into<ErrorKind>, data: Vec<u8>, reason: impl Into<String>) -> Self {
        DecodeError {
            notification: Notification::with_data(kind, data),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.notification.describe())
    }
}

impl std::error::Error for DecodeError {}
