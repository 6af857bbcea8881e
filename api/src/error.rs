//! JSON errors of the HTTP API: every failure answers `{"error_code": ..., "error_msg": ...}`
//! with a stable code, and internals never leak into the message (they are logged instead).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An API error: a status, a stable code and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Seconds after which a retry may succeed, sent as `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error_code: &'a str,
    error_msg: &'a str,
}

impl ApiError {
    /// 404 for a path no route serves.
    pub fn no_route(method: &str, path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "FLEETGATE.NO_ROUTE",
            message: format!("no route for {method} {path}"),
            retry_after: None,
        }
    }

    /// 503 when a dependency (storage) is not available.
    pub fn unavailable(what: &str) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "FLEETGATE.UNAVAILABLE",
            message: format!("{what} is not available"),
            retry_after: None,
        }
    }

    /// 500 for a failure the caller cannot act on; the cause is logged here.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "FLEETGATE.INTERNAL",
            message: "internal error".into(),
            retry_after: None,
        }
    }
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: the application's token bucket for `what` is empty; retry after `retry_after`
    /// (rounded up to whole seconds, at least one).
    pub fn rate_limited(what: &str, retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let secs = secs.max(1);
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "FLEETGATE.RATE_LIMITED",
            message: format!("too many {what} for this application; retry in {secs} s"),
            retry_after: Some(secs),
        }
    }

    /// 400: the request is malformed or breaks a rule; the message says which.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "FLEETGATE.BAD_REQUEST", message)
    }

    /// 401: no valid API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "FLEETGATE.UNAUTHORIZED", message)
    }

    /// 403: the key is valid but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FLEETGATE.FORBIDDEN", message)
    }

    /// 404 for a resource that does not exist (or belongs to another application: the two
    /// are not told apart, so ids of other applications do not leak).
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "FLEETGATE.NOT_FOUND",
            format!("{kind} {id} not found"),
        )
    }

    /// 409: the change conflicts with the stored state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "FLEETGATE.CONFLICT", message)
    }
}

impl From<fleetgate_storage::StorageError> for ApiError {
    fn from(e: fleetgate_storage::StorageError) -> Self {
        use fleetgate_storage::StorageError as E;
        match e {
            E::NotFound { kind, id } => Self::not_found(kind, id),
            E::AlreadyExists { kind, id } => Self::new(
                StatusCode::CONFLICT,
                "FLEETGATE.ALREADY_EXISTS",
                format!("{kind} {id} already exists"),
            ),
            E::LimitExceeded { what, limit } => Self::new(
                StatusCode::CONFLICT,
                "FLEETGATE.LIMIT_EXCEEDED",
                format!("limit exceeded: at most {limit} {what}"),
            ),
            E::Conflict(m) => Self::conflict(m),
            E::Aborted(inner) => match inner.downcast::<ApiError>() {
                Ok(api) => *api,
                Err(other) => Self::bad_request(other.to_string()),
            },
            other => Self::internal(other),
        }
    }
}

impl std::error::Error for ApiError {}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((actix_web::http::header::RETRY_AFTER, secs));
        }
        res.json(Body {
            error_code: self.code,
            error_msg: &self.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_limited_rounds_up_to_whole_seconds_and_sets_the_header() {
        assert_eq!(
            ApiError::rate_limited("calls", Duration::from_millis(1)).retry_after,
            Some(1)
        );
        assert_eq!(
            ApiError::rate_limited("calls", Duration::from_millis(2001)).retry_after,
            Some(3)
        );
        assert_eq!(
            ApiError::rate_limited("calls", Duration::ZERO).retry_after,
            Some(1)
        );
        let res = ApiError::rate_limited("calls", Duration::from_secs(2)).error_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            res.headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
    }
}
