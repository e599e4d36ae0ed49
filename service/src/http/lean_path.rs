//! The hot path of `POST /v1/event`. Producers send single events at high rates, and each
//! request through the full stack — the route tree, the compression and error layers and
//! poem-openapi's extractors, each boxing and moving the request's future — cost the service
//! about as much CPU as the event's own work (`make profile-ingest`). The server's request
//! layer hands such a request here instead, answered with the same steps in the same order as the OpenAPI
//! operation [`crate::http::api::Api`] `post_event`: the API key (401), the media type (415), the
//! body under its limits (413, 503), then [`crate::ingest::ingest_one`] — the key's right
//! (403) and rate (429), the event (400, 422), its consumer within the key's (403), and in
//! queue mode the publish to RabbitMQ (202) — so the same status codes and bodies. The key
//! comes from the server's request layer, which looked it up once for the log line and the
//! metrics. The operation stays, for the OpenAPI document and for what this path passes on:
//! requests with a compressed body, which the compression layer must decode, and CloudEvents.
//! The end-to-end
//! test `service_ingest_paths` holds the two to the same answers, refusals included.

use std::sync::Arc;

use poem::http::{header, Method};
use poem::web::Json;
use poem::{IntoResponse, Request, RequestBody, Response};

use crate::error::ApiError;
use crate::http::body::{
    is_binary_cloudevent, is_json, media_type, read_body, wrong_type, ONE_EVENT_MEDIA,
};
use crate::ingest::{self, Accepted};
use crate::keys::Key;
use crate::state::AppState;

/// The path this module answers.
pub const PATH: &str = "/v1/event";

/// Whether this path answers the request: `POST /v1/event` with an uncompressed body (no
/// `Content-Encoding`, or `identity` in any case: content codings are case-insensitive) that
/// is not a CloudEvent (the operation translates those).
pub fn takes(req: &Request) -> bool {
    req.method() == Method::POST
        && req.uri().path() == PATH
        && req
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
        && !is_binary_cloudevent(req)
        && !names_cloudevents(req)
}

/// Whether Content-Type starts `application/cloudevents` (structured or batched mode). A
/// byte comparison, not a parse: this runs on every event, and [`post_event`] parses the
/// media type once, later; any other `application/cloudevents…` goes to the operation, which
/// refuses it with the same 415.
fn names_cloudevents(req: &Request) -> bool {
    const PREFIX: &[u8] = b"application/cloudevents";
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..PREFIX.len()))
        .is_some_and(|head| head.eq_ignore_ascii_case(PREFIX))
}

/// Answers a request [`takes`] took; `key` is the key it presented, if one in force. An error
/// is returned, not answered, so that the caller turns it into its response (and its log
/// line) inside the request's span, which it creates only then.
pub async fn serve(
    state: &AppState,
    key: Option<&Arc<Key>>,
    req: &mut Request,
) -> Result<Response, ApiError> {
    let accepted = post_event(state, key, req).await?;
    let status = accepted.status();
    Ok(Json(accepted.into_ack())
        .with_status(status)
        .into_response())
}

async fn post_event(
    state: &AppState,
    key: Option<&Arc<Key>>,
    req: &mut Request,
) -> Result<Accepted, ApiError> {
    let key = key.ok_or(ApiError::Unauthorized)?;
    if !media_type(req).is_some_and(|m| is_json(&m)) {
        return Err(wrong_type(req, ONE_EVENT_MEDIA));
    }
    let mut body = RequestBody::new(req.take_body());
    let body = read_body(req, &mut body, state).await?;
    // By value: the body, and its share of the in-flight budget, go once it is parsed, not
    // when its event is written.
    ingest::ingest_one(state, key, body).await
}

#[cfg(test)]
mod tests {
    use poem::http::Method;
    use poem::Request;

    use super::takes;

    fn request(method: Method, uri: &str, encoding: Option<&str>) -> Request {
        let builder = Request::builder().method(method).uri_str(uri);
        match encoding {
            Some(enc) => builder.header("content-encoding", enc).finish(),
            None => builder.finish(),
        }
    }

    #[test]
    fn takes_uncompressed_posts_to_v1_event_only() {
        for (method, uri, encoding, taken) in [
            (Method::POST, "/v1/event", None, true),
            (Method::POST, "/v1/event?source=x", None, true),
            (Method::POST, "/v1/event", Some("identity"), true),
            (Method::POST, "/v1/event", Some("IDENTITY"), true),
            // Compressed: the compression layer must decode it, on the full stack.
            (Method::POST, "/v1/event", Some("gzip"), false),
            (Method::POST, "/v1/event", Some("GZIP"), false),
            (Method::POST, "/v1/event", Some("br"), false),
            (Method::POST, "/v1/event", Some("lzma"), false),
            // Other routes and methods.
            (Method::POST, "/v1/events", None, false),
            (Method::POST, "/v1/event/", None, false),
            (Method::POST, "/v1/event/65f0c0ffee00", None, false),
            (Method::POST, "/V1/EVENT", None, false),
            (Method::GET, "/v1/event", None, false),
            (Method::PUT, "/v1/event", None, false),
            (Method::POST, "/v1/find", None, false),
        ] {
            let req = request(method.clone(), uri, encoding);
            assert_eq!(takes(&req), taken, "{method} {uri} {encoding:?}");
        }
    }
}
