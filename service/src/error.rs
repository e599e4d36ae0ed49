//! The error policy of the service, and the one place errors become HTTP answers.
//!
//! - Request paths never `unwrap`: every failure is an [`ApiError`] variant, a closed set.
//! - [`ApiError::status`] and [`ApiError::code`] are the only mapping to HTTP; every answer
//!   that is not a success has the body `{"error": {"code": "...", "message": "..."}}`
//!   ([`ErrorBody`]), including the errors poem and poem-openapi raise themselves (unknown
//!   route, bad query parameter, missing API key), which [`from_poem_error`] converts. The one
//!   exception is not an error: `GET /v1/event/{id}` answers an id it does not know with 404
//!   and a status body (`{"id", "status": "unknown"}`), so that operation declares its errors
//!   with [`LookupErrorResponse`], which has no 404 of its own.
//! - 429 and 503 carry `Retry-After` (seconds).

use poem::http::StatusCode;
use poem::IntoResponse;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

/// Seconds a producer should wait after a 429 (queue full).
pub const RETRY_AFTER_BUSY_SECS: u64 = 1;
/// Seconds a producer should wait after a 503 (store unreachable).
pub const RETRY_AFTER_UNAVAILABLE_SECS: u64 = 5;

/// Everything that can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON (or NDJSON line), or cannot be decompressed.
    #[error("{0}")]
    MalformedJson(String),
    /// A query parameter or find field has the wrong form (datetime, cursor, limit, order).
    #[error("{0}")]
    BadQuery(String),
    /// The JSON is well-formed but the event is not acceptable (names the field or key path).
    #[error("{0}")]
    InvalidEvent(String),
    /// A CloudEvent's envelope breaks the CloudEvents 1.0 rules (a required attribute missing,
    /// another `specversion`, a bad attribute name or value); names the attribute.
    #[error("{0}")]
    InvalidCloudEvent(String),
    /// The JSON is well-formed but is not a find body (not an object, or an unknown field).
    #[error("{0}")]
    InvalidQuery(String),
    /// The body is bigger than `AUDIT_MAX_BODY_BYTES` (after decompression).
    #[error("request body exceeds {max_bytes} bytes")]
    BodyTooLarge { max_bytes: usize },
    /// More events than `AUDIT_MAX_BATCH_EVENTS` in one batch.
    #[error("batch holds {count} events; at most {max} are accepted per request")]
    TooManyEvents { count: usize, max: usize },
    /// Content-Type or Content-Encoding the endpoint does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Missing or wrong `X-Api-Key`.
    #[error("missing or invalid X-Api-Key header")]
    Unauthorized,
    /// The API key does not hold the right the operation needs (`right`: its name).
    #[error("API key \"{key}\" does not have the `{right}` right")]
    MissingRight { key: String, right: &'static str },
    /// The event's consumer, or the consumer a find names, is outside the API key's consumers
    /// (`verb`: what the key may not do, e.g. "send events of").
    #[error("API key \"{key}\" may not {verb} consumer {consumer:?}")]
    ConsumerNotAllowed {
        key: String,
        verb: &'static str,
        consumer: String,
    },
    /// The API key's event rate (`rate` in the key file) is used up for now.
    #[error("API key \"{key}\" is over its rate of {events_per_second} events/s; retry after {retry_after_secs} s")]
    RateLimited {
        key: String,
        events_per_second: f64,
        retry_after_secs: u64,
    },
    /// More events in one batch than the API key's burst: they could never pass together.
    #[error("batch holds {count} events; API key \"{key}\" may send at most {burst} at once (its rate's burst): split the batch")]
    BatchOverBurst {
        key: String,
        count: usize,
        burst: u32,
    },
    /// The producer's `id` is already stored with different content.
    #[error("an event with id {id} already exists with different content")]
    IdConflict { id: String },
    /// The write queue is full.
    #[error("the service is at capacity; retry after {RETRY_AFTER_BUSY_SECS} s")]
    Busy,
    /// Request bodies being read or parsed already fill `AUDIT_MAX_INFLIGHT_BODY_BYTES`.
    #[error("the service is reading as many request bytes as it may; retry after {RETRY_AFTER_BUSY_SECS} s")]
    Overloaded,
    /// The store did not take the write within the retry deadline, or is unreachable.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    /// Queue mode: the queue is past `AUDIT_AMQP_MAX_DEPTH`, or more events wait for a
    /// publisher than a replica holds (429; see `crate::queue::error`).
    #[error("{0}")]
    QueueBusy(String),
    /// Queue mode: RabbitMQ is unreachable, blocks publishers, refused or did not confirm the
    /// event (503); the message says whether the event may be stored all the same.
    #[error("{0}")]
    QueueUnavailable(String),
    /// The query ran past its server-side time limit.
    #[error("the query exceeded its time limit of {ms} ms; narrow the filter or time range")]
    QueryTimeout { ms: u64 },
    /// The page needs the Parquet archive and its store did not answer (or a recorded file is
    /// missing): no partial page is answered in its place.
    #[error("the archive is unavailable: {0}")]
    ArchiveUnavailable(String),
    /// Unknown route.
    #[error("{0}")]
    NotFound(String),
    /// Known route, other method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Anything else: a bug or a store answer we do not understand. Logged in full.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::BadQuery(_) | ApiError::InvalidCloudEvent(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::InvalidEvent(_) | ApiError::InvalidQuery(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BodyTooLarge { .. }
            | ApiError::TooManyEvents { .. }
            | ApiError::BatchOverBurst { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MissingRight { .. } | ApiError::ConsumerNotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            ApiError::IdConflict { .. } => StatusCode::CONFLICT,
            ApiError::Busy | ApiError::QueueBusy(_) | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::QueueUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_)
            | ApiError::QueryTimeout { .. }
            | ApiError::Overloaded
            | ApiError::ArchiveUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code, documented in `docs/api.md`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadQuery(_) => "bad_query",
            ApiError::InvalidEvent(_) => "invalid_event",
            ApiError::InvalidCloudEvent(_) => "invalid_cloudevent",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::TooManyEvents { .. } | ApiError::BatchOverBurst { .. } => "too_many_events",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unauthorized => "unauthorized",
            ApiError::MissingRight { .. } => "missing_right",
            ApiError::ConsumerNotAllowed { .. } => "consumer_not_allowed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::IdConflict { .. } => "id_conflict",
            ApiError::Busy | ApiError::QueueBusy(_) => "busy",
            ApiError::QueueUnavailable(_) => "queue_unavailable",
            ApiError::Unavailable(_) => "store_unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::QueryTimeout { .. } => "query_timeout",
            ApiError::ArchiveUnavailable(_) => "archive_unavailable",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::Busy | ApiError::Overloaded | ApiError::QueueBusy(_) => {
                Some(RETRY_AFTER_BUSY_SECS)
            }
            ApiError::Unavailable(_)
            | ApiError::QueueUnavailable(_)
            | ApiError::QueryTimeout { .. }
            | ApiError::ArchiveUnavailable(_) => Some(RETRY_AFTER_UNAVAILABLE_SECS),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        }
    }
}

/// `{"error": {"code", "message"}}` — the body of every error answer.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Object)]
pub struct ErrorDetail {
    /// Machine-readable, stable: `malformed_json`, `invalid_event`, `invalid_query`,
    /// `id_conflict`, `busy`, `overloaded`, ...
    pub code: String,
    /// Human-readable; names the field, key path or limit at fault.
    pub message: String,
}

/// The error answers of the API, as the OpenAPI document declares them.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ErrorResponse {
    /// Malformed JSON, bad query parameter, bad datetime or cursor; a CloudEvent that breaks
    /// the CloudEvents 1.0 rules (`invalid_cloudevent`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing or wrong `X-Api-Key`.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The API key lacks the right the operation needs (`missing_right`: `ingest` to send
    /// events, `read` to find them), or the consumer of the event or the find is outside the
    /// key's consumers (`consumer_not_allowed`); the message names the right or the consumer.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 405)]
    MethodNotAllowed(Json<ErrorBody>),
    /// The producer-supplied `id` exists with different content.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// Body over `AUDIT_MAX_BODY_BYTES` (after decompression), or too many events in a batch
    /// (over `AUDIT_MAX_BATCH_EVENTS`, or over the API key's burst).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// Content-Type or Content-Encoding not accepted.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Well-formed JSON, unacceptable event (field, size, depth, key path named) or find body
    /// (not an object, unknown field).
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// Write queue full (`busy`; queue mode: RabbitMQ queue past `AUDIT_AMQP_MAX_DEPTH`), or the
    /// API key's event rate used up (`rate_limited`); retry after the given seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// Store unreachable past the retry deadline, query over its time limit, the archive a find
    /// needs unreachable, or (queue mode) RabbitMQ unreachable, blocking publishers or not
    /// confirming.
    #[oai(status = 503)]
    ServiceUnavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
}

/// The error answers of `GET /v1/event/{id}`: those of [`ErrorResponse`] it can give, and no
/// 404 (there, 404 is the status answer for an unknown id).
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "lookup_bad_request")]
pub enum LookupErrorResponse {
    /// The id is not 24 hexadecimal characters.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing or wrong `X-Api-Key`.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The store did not answer (and, in queue mode, this replica did not publish the id).
    #[oai(status = 503)]
    ServiceUnavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
}

impl From<ApiError> for LookupErrorResponse {
    fn from(err: ApiError) -> Self {
        match ErrorResponse::from(&err) {
            ErrorResponse::BadRequest(b) => LookupErrorResponse::BadRequest(b),
            ErrorResponse::Unauthorized(b) => LookupErrorResponse::Unauthorized(b),
            ErrorResponse::ServiceUnavailable(b, retry) => {
                LookupErrorResponse::ServiceUnavailable(b, retry)
            }
            // Nothing else can happen on this path; should it, it is a bug, answered as one.
            _ => LookupErrorResponse::Internal(Json(err.body())),
        }
    }
}

/// The error answers of the operators' endpoints without a key (`/readyz`, `/metrics`): no
/// request body or key to get wrong, so only these.
#[derive(Debug, ApiResponse)]
pub enum OpsErrorResponse {
    /// `/metrics` when `AUDIT_METRICS_LISTEN_ADDR` is set: it is served there instead.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// Not ready: the database (queue mode: RabbitMQ) did not answer in time.
    #[oai(status = 503)]
    ServiceUnavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
}

impl From<ApiError> for OpsErrorResponse {
    fn from(err: ApiError) -> Self {
        match ErrorResponse::from(&err) {
            ErrorResponse::NotFound(b) => OpsErrorResponse::NotFound(b),
            ErrorResponse::ServiceUnavailable(b, retry) => {
                OpsErrorResponse::ServiceUnavailable(b, retry)
            }
            // Nothing else can happen on these paths; should it, it is a bug, answered as one.
            _ => OpsErrorResponse::Internal(Json(err.body())),
        }
    }
}

fn lookup_bad_request(err: poem::Error) -> LookupErrorResponse {
    LookupErrorResponse::from(ApiError::BadQuery(err.to_string()))
}

fn bad_request(err: poem::Error) -> ErrorResponse {
    ErrorResponse::from(ApiError::BadQuery(err.to_string()))
}

impl From<ApiError> for ErrorResponse {
    fn from(err: ApiError) -> Self {
        ErrorResponse::from(&err)
    }
}

impl From<&ApiError> for ErrorResponse {
    fn from(err: &ApiError) -> Self {
        if matches!(err, ApiError::Internal(_)) {
            tracing::error!(error = %err, "internal error");
        }
        let retry = err.retry_after_secs().unwrap_or(RETRY_AFTER_BUSY_SECS);
        let body = Json(err.body());
        match err.status() {
            StatusCode::BAD_REQUEST => ErrorResponse::BadRequest(body),
            StatusCode::UNAUTHORIZED => ErrorResponse::Unauthorized(body),
            StatusCode::FORBIDDEN => ErrorResponse::Forbidden(body),
            StatusCode::NOT_FOUND => ErrorResponse::NotFound(body),
            StatusCode::METHOD_NOT_ALLOWED => ErrorResponse::MethodNotAllowed(body),
            StatusCode::CONFLICT => ErrorResponse::Conflict(body),
            StatusCode::PAYLOAD_TOO_LARGE => ErrorResponse::PayloadTooLarge(body),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorResponse::UnsupportedMediaType(body),
            StatusCode::UNPROCESSABLE_ENTITY => ErrorResponse::Unprocessable(body),
            StatusCode::TOO_MANY_REQUESTS => ErrorResponse::TooManyRequests(body, retry),
            StatusCode::SERVICE_UNAVAILABLE => ErrorResponse::ServiceUnavailable(body, retry),
            _ => ErrorResponse::Internal(body),
        }
    }
}

/// Lets payload parsers return `ApiError` through poem's `Result`, keeping the same body.
impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> poem::Response {
        ErrorResponse::from(self).into_response()
    }
}

/// Converts an error raised by poem or poem-openapi (unknown route, bad parameter, missing
/// API key, wrong content type) into the API's error shape; our own errors pass unchanged.
pub fn from_poem_error(err: poem::Error) -> poem::Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return ErrorResponse::from(api).into_response();
    }
    // Our own documented error answers travel as responses already in the right shape.
    if err.is_from_response() {
        return err.into_response();
    }
    let message = err.to_string();
    let api = match err.status() {
        StatusCode::BAD_REQUEST => ApiError::BadQuery(message),
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(message),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(message),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::InvalidEvent(message),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(message),
        _ => ApiError::Internal(message),
    };
    ErrorResponse::from(api).into_response()
}
