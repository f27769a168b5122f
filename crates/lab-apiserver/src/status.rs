//! API errors, rendered as `meta.k8s.io/v1` `Status` objects the way kube-apiserver does, so kube-rs
//! (`kube::Error::Api`) and kubectl parse code, reason and message.

use axum::http::StatusCode;
use serde_json::{Value, json};

/// A request failure with the HTTP code and `Status.reason` a real API server would return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `Status.details`: `(name, group, kind)` of the object concerned, when there is one.
    pub details: Option<(String, String, String)>,
}

/// What a `Status` error is about, for its `details` and message (`leases.coordination.k8s.io "x"`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    /// `plural.group`, or `plural` for the core group, as the real server qualifies resources in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self) -> Option<(String, String, String)> {
        Some((self.name.to_string(), self.group.to_string(), self.plural.to_string()))
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(target: Target<'_>) -> Self {
        Self {
            details: target.details(),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", target.qualified(), target.name),
            )
        }
    }

    /// 404 for a path that names no served resource.
    pub fn no_such_path(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn already_exists(target: Target<'_>) -> Self {
        Self {
            details: target.details(),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", target.qualified(), target.name),
            )
        }
    }

    /// 409 for a stale `resourceVersion`, with the exact wording client-go's conflict helpers expect.
    pub fn conflict(target: Target<'_>) -> Self {
        Self::conflict_because(
            target,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn conflict_because(target: Target<'_>, why: &str) -> Self {
        Self {
            details: target.details(),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {why}",
                    target.qualified(),
                    target.name
                ),
            )
        }
    }

    /// 422 Invalid: `field: problem` pairs as in the real server's field errors.
    pub fn invalid(target: Target<'_>, kind: &str, causes: &str) -> Self {
        Self {
            details: target.details(),
            ..Self::new(
                422,
                "Invalid",
                format!("{kind} \"{}\" is invalid: {causes}", target.name),
            )
        }
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 410 Gone for a watch or list from a `resourceVersion` older than the kept history.
    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The `Status` object for the response body or a watch `ERROR` event.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, group, kind)) = &self.details {
            status["details"] = json!({ "name": name, "group": group, "kind": kind });
        }
        status
    }
}

/// A `Status` with `status: Success`, as returned by some deletes.
pub fn success(target: Target<'_>, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": { "name": target.name, "group": target.group, "kind": target.plural, "uid": uid },
    })
}
