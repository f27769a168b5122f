//! API errors, rendered as `meta.k8s.io/v1` `Status` objects the way kube-apiserver does, so kube-rs
//! (`kube::Error::Api`) and kubectl parse code, reason and message.

use axum::http::StatusCode;
use serde_json::{Value, json};

/// One field error of a 422 `Invalid`, as `k8s.io/apimachinery/pkg/util/validation/field.Error` renders it:
/// `cause.message` is the body (`Invalid value: "x": why`), the Status message prefixes the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub reason: &'static str,
    pub field: String,
    pub body: String,
}

impl FieldError {
    pub fn required(field: &str, detail: &str) -> Self {
        let body = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self {
            reason: "FieldValueRequired",
            field: field.to_string(),
            body,
        }
    }

    /// `value` as Go's `%v` of the field value would print it (strings are quoted with [`go_quote`]).
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            body: format!("Invalid value: {value}: {detail}"),
        }
    }

    pub fn forbidden(field: &str, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.to_string(),
            body: format!("Forbidden: {detail}"),
        }
    }

    pub fn unsupported(field: &str, value: &str, supported: &[&str]) -> Self {
        let supported: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.to_string(),
            body: format!("Unsupported value: {value}: supported values: {}", supported.join(", ")),
        }
    }

    /// From `field: body` text (the CRD checks of `registry` report that way).
    pub fn from_text(text: &str) -> Self {
        let (field, body) = text.split_once(": ").unwrap_or(("", text));
        let reason = if body.starts_with("Required value") {
            "FieldValueRequired"
        } else if body.starts_with("Unsupported value") {
            "FieldValueNotSupported"
        } else {
            "FieldValueInvalid"
        };
        Self {
            reason,
            field: field.to_string(),
            body: body.to_string(),
        }
    }

    fn text(&self) -> String {
        format!("{}: {}", self.field, self.body)
    }
}

/// Go's `%q` of a string (what the real server's messages quote values with).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `Status.details`: the object concerned (`kind` is the plural for most errors, the Kind for `Invalid` ones, as
/// the real server fills it), and the field errors of an `Invalid`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub causes: Vec<FieldError>,
}

/// A request failure with the HTTP code and `Status.reason` a real API server would return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    /// Empty for a 500 that has no reason (a create carrying a resourceVersion), as on the real server.
    pub reason: &'static str,
    pub message: String,
    /// Boxed: most errors have none, and every handler returns `Result<_, ApiError>`.
    pub details: Option<Box<Details>>,
}

/// What a `Status` error is about, for its `details` and message (`leases.coordination.k8s.io "x"`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub name: &'a str,
}

/// `Kind` or `Kind.group`, as `schema.GroupKind.String()` prints it.
pub fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
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

    fn details(&self) -> Option<Box<Details>> {
        Some(Box::new(Details {
            name: self.name.to_string(),
            group: self.group.to_string(),
            kind: self.plural.to_string(),
            causes: Vec::new(),
        }))
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

    /// 404 for a path under a served group version that names no resource (empty `details`, as the real server).
    pub fn no_such_resource() -> Self {
        Self {
            details: Some(Box::default()),
            ..Self::new(404, "NotFound", "the server could not find the requested resource")
        }
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
        Self {
            details: target.details(),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your \
                     changes to the latest version and try again",
                    target.qualified(),
                    target.name
                ),
            )
        }
    }

    /// 409 for a failed delete precondition: the real server names the Kind there, not the resource.
    pub fn precondition_failed(group: &str, kind: &str, name: &str, why: &str) -> Self {
        let kind_text = group_kind(group, kind);
        Self {
            details: Some(Box::new(Details {
                name: name.to_string(),
                group: group.to_string(),
                kind: kind.to_string(),
                causes: Vec::new(),
            })),
            ..Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {kind_text} \"{name}\": {why}"),
            )
        }
    }

    /// 422 Invalid for an object of `kind` (`details.kind`; a plural for errors the generic registry raises),
    /// message `Kind "name" is invalid: field: body` (several errors in brackets, as Go's aggregate prints them).
    pub fn invalid(group: &str, kind: &str, name: &str, errors: Vec<FieldError>) -> Self {
        let texts: Vec<String> = errors.iter().map(FieldError::text).collect();
        let aggregate = if texts.len() == 1 {
            texts[0].clone()
        } else {
            format!("[{}]", texts.join(", "))
        };
        Self {
            details: Some(Box::new(Details {
                name: name.to_string(),
                group: group.to_string(),
                kind: kind.to_string(),
                causes: errors,
            })),
            ..Self::new(
                422,
                "Invalid",
                format!("{} {} is invalid: {aggregate}", group_kind(group, kind), go_quote(name)),
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

    /// 500 with no reason, as the real server answers a few malformed requests.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The `Status` object for the response body or a watch `ERROR` event (empty fields omitted, as Go's
    /// `omitempty` does).
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            let mut out = serde_json::Map::new();
            for (key, value) in [
                ("name", &details.name),
                ("group", &details.group),
                ("kind", &details.kind),
            ] {
                if !value.is_empty() {
                    out.insert(key.to_string(), json!(value));
                }
            }
            if !details.causes.is_empty() {
                let causes: Vec<Value> = details
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.body, "field": c.field}))
                    .collect();
                out.insert("causes".to_string(), json!(causes));
            }
            status["details"] = Value::Object(out);
        }
        status
    }
}

/// A `Status` with `status: Success`, as returned by some deletes.
pub fn success(target: Target<'_>, uid: &str) -> Value {
    let mut details = json!({"name": target.name, "kind": target.plural, "uid": uid});
    if !target.group.is_empty() {
        details["group"] = json!(target.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
