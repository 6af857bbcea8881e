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
        }
    }

    /// 503 when a dependency (storage) is not available.
    pub fn unavailable(what: &str) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "FLEETGATE.UNAVAILABLE",
            message: format!("{what} is not available"),
        }
    }

    /// 500 for a failure the caller cannot act on; the cause is logged here.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "FLEETGATE.INTERNAL",
            message: "internal error".into(),
        }
    }
}

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
        HttpResponse::build(self.status).json(Body {
            error_code: self.code,
            error_msg: &self.message,
        })
    }
}
