//! Request bodies: reading them with a size cap enforced while reading (and after gzip or
//! deflate decompression, which the `Compression` middleware applies before us), and the
//! payload types the OpenAPI operations take, whose parsing is ours so that every mistake
//! gets the API's error shape.

use std::sync::Arc;

use poem::http::header;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use tokio::io::AsyncReadExt;

use crate::error::ApiError;
use crate::event::EventIn;
use crate::query::FindRequest;
use crate::state::AppState;

/// Content encodings the `Compression` middleware decodes.
const DECODED_ENCODINGS: [&str; 5] = ["gzip", "deflate", "br", "zstd", "identity"];

/// Reads the whole body, refusing more than `max_bytes` (after decompression).
pub async fn read_capped(
    req: &Request,
    body: &mut RequestBody,
    max_bytes: usize,
) -> Result<Vec<u8>, ApiError> {
    let encoding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    if let Some(enc) = &encoding {
        if !DECODED_ENCODINGS.contains(&enc.as_str()) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {enc:?} is not supported; use gzip, deflate, br or none"
            )));
        }
    }
    // Without compression the declared length is the real one: refuse early.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if encoding.is_none() && declared.is_some_and(|n| n > max_bytes) {
        return Err(ApiError::BodyTooLarge { max_bytes });
    }
    let Ok(body) = body.take() else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max_bytes));
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    body.into_async_read()
        .take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| match &encoding {
            Some(enc) => {
                ApiError::MalformedJson(format!("cannot decode the {enc} request body: {e}"))
            }
            None => ApiError::MalformedJson(format!("cannot read the request body: {e}")),
        })?;
    if buf.len() > max_bytes {
        return Err(ApiError::BodyTooLarge { max_bytes });
    }
    Ok(buf)
}

fn state(req: &Request) -> Result<&Arc<AppState>, ApiError> {
    req.data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn is_ndjson(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
    )
}

fn content_type(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

fn wrong_type(req: &Request, expected: &str) -> ApiError {
    match content_type(req) {
        Some(ct) => ApiError::UnsupportedMediaType(format!(
            "Content-Type {ct:?} is not accepted here; send {expected}"
        )),
        None => ApiError::UnsupportedMediaType(format!("Content-Type is missing; send {expected}")),
    }
}

fn request_meta(content: Vec<MetaMediaType>) -> Option<MetaRequest> {
    Some(MetaRequest {
        description: None,
        content,
        required: true,
    })
}

/// The body of `POST /v1/event`: one JSON event, read but not yet parsed.
pub struct EventBody(pub Vec<u8>);

impl<'a> ApiExtractor<'a> for EventBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        EventIn::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        request_meta(vec![MetaMediaType {
            content_type: "application/json",
            schema: EventIn::schema_ref(),
        }])
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        if !content_type(req).is_some_and(is_json) {
            return Err(wrong_type(req, "application/json").into());
        }
        let max = state(req)?.limits.max_body_bytes;
        Ok(EventBody(read_capped(req, body, max).await?))
    }
}

/// The body of `POST /v1/events`: a JSON array of events, or NDJSON (one event per line).
pub enum BatchBody {
    Json(Vec<u8>),
    Ndjson(Vec<u8>),
}

impl<'a> ApiExtractor<'a> for BatchBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        EventIn::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        request_meta(vec![
            MetaMediaType {
                content_type: "application/json",
                schema: Vec::<EventIn>::schema_ref(),
            },
            MetaMediaType {
                content_type: "application/x-ndjson",
                schema: MetaSchemaRef::Inline(Box::new(
                    poem_openapi::registry::MetaSchema::new_with_format("string", "ndjson"),
                )),
            },
        ])
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let ct = content_type(req);
        let ndjson = ct.is_some_and(is_ndjson);
        if !ndjson && !ct.is_some_and(is_json) {
            return Err(wrong_type(req, "application/json or application/x-ndjson").into());
        }
        let max = state(req)?.limits.max_body_bytes;
        let bytes = read_capped(req, body, max).await?;
        Ok(if ndjson {
            BatchBody::Ndjson(bytes)
        } else {
            BatchBody::Json(bytes)
        })
    }
}

/// The body of `POST /v1/find` (and of the seed's `GET /v1/find` with a JSON body).
pub struct FindBody(pub Vec<u8>);

impl<'a> ApiExtractor<'a> for FindBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        FindRequest::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        request_meta(vec![MetaMediaType {
            content_type: "application/json",
            schema: FindRequest::schema_ref(),
        }])
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        if !content_type(req).is_some_and(is_json) {
            return Err(wrong_type(req, "application/json").into());
        }
        let max = state(req)?.limits.max_body_bytes;
        Ok(FindBody(read_capped(req, body, max).await?))
    }
}

/// The optional JSON body of `GET /v1/find` (the seed's form). Not declared in the OpenAPI
/// document: GET bodies are legal but many clients cannot send them, so the query
/// parameters are the documented form.
pub struct OptionalFindBody(pub Vec<u8>);

impl<'a> poem::FromRequest<'a> for OptionalFindBody {
    async fn from_request(req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v != "0")
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(OptionalFindBody(Vec::new()));
        }
        if let Some(ct) = content_type(req) {
            if !is_json(ct) {
                return Err(wrong_type(req, "application/json").into());
            }
        }
        let max = state(req)?.limits.max_body_bytes;
        Ok(OptionalFindBody(read_capped(req, body, max).await?))
    }
}
