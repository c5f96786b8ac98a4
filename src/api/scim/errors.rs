//! SCIM's error responses (RFC 7644 §3.12): an HTTP status, a `scimType`
//! for the 400s a client can act on, and a detail, as
//! `urn:ietf:params:scim:api:messages:2.0:Error`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tonic::{Code, Status};

use super::urns::{CONTENT_TYPE, ERROR_SCHEMA};

#[derive(Debug)]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

pub type ScimResult<T> = Result<T, ScimError>;

impl ScimError {
    pub fn new(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    fn bad_request(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }

    /// The body is not JSON, or not the message the endpoint takes.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad_request("invalidSyntax", detail)
    }

    /// A value is missing, of the wrong type or out of range.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request("invalidValue", detail)
    }

    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad_request("invalidFilter", detail)
    }

    /// A PATCH path that is malformed or names no supported attribute.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad_request("invalidPath", detail)
    }

    /// A PATCH path whose filter selects nothing to replace.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad_request("noTarget", detail)
    }

    /// An attempt to change a read-only attribute.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad_request("mutability", detail)
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            None,
            format!("{kind} {id:?} not found"),
        )
    }

    /// `If-Match` named a version that is no longer current.
    pub fn version_mismatch(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, None, detail)
    }

    /// A record the body names (a manager, a group member) does not exist:
    /// a bad value in the body, not a missing resource at the URL.
    pub fn into_bad_reference(self) -> Self {
        if self.status == StatusCode::NOT_FOUND {
            Self::invalid_value(self.detail)
        } else {
            self
        }
    }
}

/// The service's errors as SCIM sees them: the same checks, the same
/// messages, SCIM's status codes.
impl From<Status> for ScimError {
    fn from(status: Status) -> Self {
        let (code, scim_type) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, Some("invalidValue"))
            }
            Code::NotFound => (StatusCode::NOT_FOUND, None),
            Code::AlreadyExists => (StatusCode::CONFLICT, Some("uniqueness")),
            Code::Aborted => (StatusCode::PRECONDITION_FAILED, None),
            Code::FailedPrecondition => (StatusCode::CONFLICT, None),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, None),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, None),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, None),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, None),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        Self::new(code, scim_type, status.message())
    }
}

impl From<crate::error::Error> for ScimError {
    fn from(error: crate::error::Error) -> Self {
        Status::from(error).into()
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = json!(scim_type);
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
