//! The hot path of `POST /v1/event`. Producers send single events at high rates, and each
//! request through the full stack — the route tree, the compression and error layers and
//! poem-openapi's extractors, each boxing and moving the request's future — cost the service
//! about as much CPU as the event's own work (`make profile-ingest`). This endpoint takes such
//! a request first and answers it with the same steps in the same order as the OpenAPI
//! operation [`crate::api::Api`] `post_event`: the API key (401), the media type (415), the
//! body under its limits (413, 503), then [`crate::ingest::ingest_json`] — which in queue mode
//! publishes to RabbitMQ (202) — so the same status codes and bodies. The operation stays, for the OpenAPI document and for what this path
//! passes on: requests with a compressed body, which the compression layer must decode.

use std::sync::Arc;

use poem::http::{header, Method, StatusCode};
use poem::web::Json;
use poem::{Endpoint, IntoResponse, Request, RequestBody, Response};

use crate::auth::key_matches;
use crate::body::{is_json, media_type, read_body, wrong_type};
use crate::error::{ApiError, ErrorResponse};
use crate::ingest::{self, Accepted};
use crate::state::AppState;

/// Serves `POST /v1/event` itself and passes every other request to `inner`.
pub struct FastIngest<E> {
    pub inner: E,
    pub state: Arc<AppState>,
}

impl<E: Endpoint> Endpoint for FastIngest<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        if !takes(&req) {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        Ok(match post_event(&self.state, &mut req).await {
            Ok(Accepted::Created(ack)) => {
                Json(ack).with_status(StatusCode::CREATED).into_response()
            }
            Ok(Accepted::AlreadyStored(ack)) => Json(ack).into_response(),
            Ok(Accepted::Queued(ack)) => {
                Json(ack).with_status(StatusCode::ACCEPTED).into_response()
            }
            Err(e) => ErrorResponse::from(e).into_response(),
        })
    }
}

/// `POST /v1/event` with an uncompressed body.
fn takes(req: &Request) -> bool {
    req.method() == Method::POST
        && req.uri().path() == "/v1/event"
        && req
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

async fn post_event(state: &AppState, req: &mut Request) -> Result<Accepted, ApiError> {
    let presented = req
        .headers()
        .get("x-api-key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !key_matches(&state.api_keys, presented) {
        return Err(ApiError::Unauthorized);
    }
    if !media_type(req).is_some_and(|m| is_json(&m)) {
        return Err(wrong_type(req, "application/json"));
    }
    let mut body = RequestBody::new(req.take_body());
    let (bytes, _budget) = read_body(req, &mut body, state).await?;
    ingest::ingest_json(state, &bytes).await
}
