//! The one error type every handler returns, with Consul's status codes and
//! plain-text bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::decode::DecodeError;
use crate::local::LocalError;
use crate::rpc::{MembershipError, ReadError, WriteError};

/// Why a request failed; the variant decides the status, the text is the body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Invalid input: bad JSON, wrong types, missing fields, bad parameters (400).
    #[error("{0}")]
    BadRequest(String),
    /// The thing named in the path does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not for this method (405).
    #[error("method {0} not allowed")]
    MethodNotAllowed(String),
    /// The body is larger than the limit (413).
    #[error("Request body too large")]
    PayloadTooLarge,
    /// The body, a value or a transaction is over one of its own limits
    /// (413), with Consul's message for that limit.
    #[error("{0}")]
    TooLarge(String),
    /// No leader is known, so writes and default reads cannot proceed (500).
    #[error("No cluster leader")]
    NoLeader,
    /// Anything else that failed on our side (500).
    #[error("{0}")]
    Internal(String),
    /// Too much in flight: the request was shed without being run (503).
    #[error("Too many requests in flight")]
    Overloaded,
    /// This client has as many blocking queries parked as it may
    /// (`limits.http_max_blocking_per_client`); others are served (429).
    #[error(
        "Too many blocking queries parked from this client address \
         (limits.http_max_blocking_per_client); retry with fewer"
    )]
    TooManyBlocking,
    /// The request's token may not do this (403), in Consul's words:
    /// clients match "Permission denied". The anonymous token is named as
    /// Consul names it, with its hint that no token was sent.
    #[error(
        "Permission denied: {} lacks permission '{permission}'{on}{}",
        denied_who(.accessor),
        denied_hint(.accessor)
    )]
    PermissionDenied {
        /// The token's AccessorID.
        accessor: String,
        /// What it lacks, as Consul names it (`service:write`).
        permission: &'static str,
        /// ` on "name"`, or empty for a permission without a name.
        on: String,
    },
    /// A server refused the request's token (403), in its words.
    #[error("{0}")]
    Forbidden(String),
    /// The request's token is not one the ACL system knows (403).
    #[error("ACL not found")]
    AclNotFound,
    /// An ACL endpoint while ACLs are off (401).
    #[error("ACL support disabled")]
    AclDisabled,
}

/// Who lacks a permission, as Consul's `PermissionDeniedError` says it.
fn denied_who(accessor: &str) -> String {
    if accessor == crate::catalog::ANONYMOUS_ACCESSOR_ID {
        "anonymous token".into()
    } else {
        format!("token with AccessorID '{accessor}'")
    }
}

/// Consul's hint after a refusal of the anonymous token.
fn denied_hint(accessor: &str) -> &'static str {
    if accessor == crate::catalog::ANONYMOUS_ACCESSOR_ID {
        ". The anonymous token is used implicitly when a request does not specify a token."
    } else {
        ""
    }
}

impl ApiError {
    /// The status Consul answers with for this kind of error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge | Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoLeader | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyBlocking => StatusCode::TOO_MANY_REQUESTS,
            Self::PermissionDenied { .. } | Self::AclNotFound | Self::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            Self::AclDisabled => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NoLeader => Self::NoLeader,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NoLeader => Self::NoLeader,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::NoLeader => Self::NoLeader,
            MembershipError::PermissionDenied(text) => Self::Forbidden(text),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<LocalError> for ApiError {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::Invalid(m) => Self::BadRequest(m),
            LocalError::ScriptsDisabled => Self::BadRequest(e.to_string()),
            LocalError::UnknownCheck(_) => Self::NotFound(e.to_string()),
            LocalError::Refused(r) => Self::BadRequest(r.to_string()),
            LocalError::UnknownService(_) => Self::NotFound(e.to_string()),
            LocalError::Write(w) => w.into(),
            LocalError::Read(r) => r.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogError;

    fn answer(e: impl Into<ApiError>) -> (StatusCode, String) {
        let e = e.into();
        (e.status(), e.to_string())
    }

    #[test]
    fn write_and_local_errors_map_to_consul_codes() {
        assert_eq!(
            answer(WriteError::NoLeader),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "No cluster leader".into()
            )
        );
        assert_eq!(
            answer(LocalError::Write(WriteError::NoLeader)),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "No cluster leader".into()
            )
        );
        // Reads and membership changes fail as writes always did.
        assert_eq!(
            answer(ReadError::NoLeader),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "No cluster leader".into()
            )
        );
        assert_eq!(
            answer(MembershipError::NoServers),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "No known Consul servers".into()
            )
        );
        assert_eq!(
            answer(LocalError::Refused(CatalogError::Missing("Node".into()))),
            (StatusCode::BAD_REQUEST, "missing Node".into())
        );
        assert_eq!(
            answer(LocalError::UnknownService("x".into())).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(LocalError::Invalid("bad".into())).0,
            StatusCode::BAD_REQUEST
        );
    }
}
