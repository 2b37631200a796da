//! Reading a raw request body under a limit that counts the bytes actually
//! read, so a chunked body without `Content-Length` cannot slip past it
//! (Consul's PR #22916).

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::ApiError;

/// Reads `body` whole, refusing with 413 once it passes `max` bytes: at
/// once when `Content-Length` says so, else as soon as that many arrived.
/// `too_large` makes the message from the declared length, if any.
pub(super) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    too_large: impl Fn(Option<u64>) -> String,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::TooLarge(too_large(declared)));
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::TooLarge(too_large(None)))
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "Failed to read the request body: {e}"
        ))),
    }
}
