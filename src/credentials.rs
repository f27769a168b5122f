//! Whether the API server accepts the agent's credentials. A ServiceAccount token that was revoked (its bound object
//! or its ServiceAccount deleted) or has expired makes every request fail with 401 Unauthorized: the agent can no
//! longer see or write anything, as in an API outage, but unlike an outage it will not end by itself. The agent does
//! not exit (a restart would not help and would crash-loop); it says so once, clearly, keeps retrying (kube's client
//! reads a rotated token file anew), and reports not ready on `/readyz` until a request is accepted again.
//!
//! [`Credentials`] watches the status of every response through a layer on the client's HTTP stack; the decision of
//! when the state changes is the pure [`CredentialState`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kube::client::{ClientBuilder, DynBody};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tower::util::MapResponseLayer;
use tracing::{error, info};

/// A change of whether the credentials are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The first 401 after an accepted request (or at start).
    Rejected,
    /// The first accepted request after `refused` 401s.
    Accepted { refused: u64 },
}

/// Pure: the credentials are rejected from a 401 until a response that is neither 401 nor a server error (a 5xx or
/// 429 says nothing about them).
#[derive(Clone, Debug, Default)]
pub struct CredentialState {
    /// 401s since the last accepted request; `Some` while rejected.
    refused: Option<u64>,
}

impl CredentialState {
    /// A response with HTTP status `code`.
    pub fn observe(&mut self, code: u16) -> Option<Change> {
        match (code, &mut self.refused) {
            (401, Some(n)) => {
                *n += 1;
                None
            }
            (401, None) => {
                self.refused = Some(1);
                Some(Change::Rejected)
            }
            (429 | 500..=599, _) | (_, None) => None,
            (_, Some(n)) => {
                let refused = *n;
                self.refused = None;
                Some(Change::Accepted { refused })
            }
        }
    }

    /// Whether the last word on the credentials was a 401.
    pub fn rejected(&self) -> bool {
        self.refused.is_some()
    }
}

/// The agent's view of its credentials, shared by the client's layer, `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct Credentials {
    state: Mutex<CredentialState>,
    rejected: AtomicBool,
    /// 1 while the API server rejects the credentials (`herald_api_credentials_rejected`).
    pub rejected_gauge: Gauge,
    /// Responses 401 Unauthorized (`herald_api_unauthorized_responses_total`).
    pub unauthorized: Counter,
}

impl Credentials {
    /// Whether the API server rejects the credentials right now.
    pub fn rejected(&self) -> bool {
        self.rejected.load(Ordering::Relaxed)
    }

    /// A response with HTTP status `code`: logs and publishes a change.
    pub fn observe(&self, code: u16) {
        if code == 401 {
            self.unauthorized.inc();
        }
        let change = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(code);
        match change {
            Some(Change::Rejected) => {
                self.rejected.store(true, Ordering::Relaxed);
                self.rejected_gauge.set(1);
                error!(
                    "the API server rejects this agent's credentials (401 Unauthorized): its ServiceAccount token was \
                     revoked or has expired, or the ServiceAccount was deleted. Nothing can be read or written until \
                     it accepts them: the agent keeps retrying (a rotated token file is read anew), follows its \
                     --api-outage policy meanwhile, and reports not ready on /readyz. Check the ServiceAccount \
                     herald in the agent's namespace and the token mounted into the pod"
                );
            }
            Some(Change::Accepted { refused }) => {
                self.rejected.store(false, Ordering::Relaxed);
                self.rejected_gauge.set(0);
                info!(refused, "the API server accepts this agent's credentials again");
            }
            None => {}
        }
    }

    /// A client for `config` whose every response's status goes through [`Credentials::observe`].
    pub fn client(self: &Arc<Self>, config: kube::Config) -> Result<kube::Client, kube::Error> {
        let me = Arc::clone(self);
        let observe = MapResponseLayer::new(move |response: http::Response<Box<DynBody>>| {
            me.observe(response.status().as_u16());
            response
        });
        Ok(ClientBuilder::try_from(config)?.with_layer(&observe).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_from_the_first_401_until_an_accepted_request() {
        let mut s = CredentialState::default();
        assert_eq!(s.observe(200), None);
        assert_eq!(s.observe(404), None, "a 404 was accepted, and nothing changed");
        assert!(!s.rejected());
        assert_eq!(s.observe(401), Some(Change::Rejected));
        assert!(s.rejected());
        assert_eq!(s.observe(401), None, "said once");
        assert_eq!(
            s.observe(503),
            None,
            "a server error says nothing about the credentials"
        );
        assert_eq!(s.observe(429), None);
        assert!(s.rejected());
        assert_eq!(
            s.observe(403),
            Some(Change::Accepted { refused: 2 }),
            "403: authenticated"
        );
        assert!(!s.rejected());
        assert_eq!(s.observe(401), Some(Change::Rejected), "a new rejection is news again");
        assert_eq!(s.observe(201), Some(Change::Accepted { refused: 1 }));
    }

    #[test]
    fn shared_view_follows_the_state() {
        let c = Credentials::default();
        c.observe(200);
        assert!(!c.rejected());
        c.observe(401);
        c.observe(401);
        assert!(c.rejected());
        assert_eq!(c.rejected_gauge.get(), 1);
        assert_eq!(c.unauthorized.get(), 2);
        c.observe(200);
        assert!(!c.rejected());
        assert_eq!(c.rejected_gauge.get(), 0);
    }
}
