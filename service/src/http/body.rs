//! Request bodies: reading one under its limits ([`read_body`]), and the one extractor of the
//! OpenAPI operations' bodies, [`JsonBody`], which checks the media type first. The size cap is
//! enforced while reading (and after gzip, deflate, br or zstd decompression, which the
//! `Compression` middleware applies before us); the in-flight budget
//! (`AUDIT_MAX_INFLIGHT_BODY_BYTES`) is taken as the body's buffer grows and given back when
//! the body is dropped — by the handlers, as soon as it is parsed. Parsing is left to the
//! handlers, so that every mistake gets the API's error shape.

use std::marker::PhantomData;
use std::sync::Arc;

use mime::Mime;
use poem::http::{header, HeaderMap};
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cloudevents::openapi::CloudEventDoc;
use crate::cloudevents::{BATCH, BINARY_MARKER_HEADER, STRUCTURED};
use crate::error::ApiError;
use crate::event::EventIn;
use crate::find::query::FindRequest;
pub(crate) use crate::media::is_json;
use crate::state::AppState;

/// Content encodings the `Compression` middleware decodes, and `identity`.
const DECODED_ENCODINGS: [&str; 5] = ["gzip", "deflate", "br", "zstd", "identity"];

/// Subtypes of `application/` taken as NDJSON (one JSON value per line).
const NDJSON_SUBTYPES: [&str; 4] = ["x-ndjson", "ndjson", "jsonl", "x-jsonlines"];

/// The first buffer of a body whose size is unknown until it is read (compressed, or chunked):
/// room for a typical event. Larger bodies double it, up to `AUDIT_MAX_BODY_BYTES`.
const FIRST_BUFFER_BYTES: usize = 8 * 1024;

/// Read past a full buffer to learn whether the body goes on before growing the buffer, so
/// that a body of exactly its declared length never takes a larger share.
const PROBE_BYTES: usize = 64;

/// What the headers say about a body, read once.
struct BodyHeaders {
    /// `Content-Encoding`, lower-cased; checked to be one the middleware decodes.
    encoding: Option<String>,
    /// `Content-Length`: the real size when the body is not compressed.
    declared: Option<usize>,
}

impl BodyHeaders {
    fn of(req: &Request) -> Result<Self, ApiError> {
        let encoding = req
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
        if let Some(enc) = &encoding {
            if !DECODED_ENCODINGS.contains(&enc.as_str()) {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Encoding {enc:?} is not supported; use {} or none",
                    DECODED_ENCODINGS.join(", ")
                )));
            }
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        Ok(BodyHeaders { encoding, declared })
    }

    /// The declared length, when it is the real one (no compression).
    fn real_length(&self) -> Option<usize> {
        match self.encoding.as_deref() {
            None | Some("identity") => self.declared,
            Some(_) => None,
        }
    }
}

/// A body's share of the in-flight budget (`AUDIT_MAX_INFLIGHT_BODY_BYTES`, one permit per
/// KiB): it covers the body's buffer, grows with it, and goes back to the budget when dropped.
#[derive(Default)]
pub(crate) struct BudgetShare(Option<OwnedSemaphorePermit>);

impl BudgetShare {
    /// Makes the share cover `bytes` in all. `false`, the share unchanged, when the budget has
    /// not that much left.
    fn cover(&mut self, budget: &Arc<Semaphore>, bytes: usize) -> bool {
        let wanted = bytes.div_ceil(1024).max(1);
        let held = self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        let Some(more) = wanted.checked_sub(held).filter(|n| *n > 0) else {
            return true;
        };
        let Ok(more) = u32::try_from(more) else {
            return false;
        };
        match (budget.clone().try_acquire_many_owned(more), &mut self.0) {
            (Ok(more), Some(held)) => held.merge(more),
            (Ok(more), None) => self.0 = Some(more),
            (Err(_), _) => return false,
        }
        true
    }
}

/// A request body read under its limits, holding its share of the in-flight budget: drop it as
/// soon as it is parsed.
pub struct ReadBody {
    bytes: Vec<u8>,
    share: BudgetShare,
}

impl AsRef<[u8]> for ReadBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads a whole request body under both limits: at most `AUDIT_MAX_BODY_BYTES` (after
/// decompression), and a share of `AUDIT_MAX_INFLIGHT_BODY_BYTES` that covers the buffer the
/// body is read into. An uncompressed body of known length is read into a buffer of that
/// length, its share taken before the first byte; any other body's size is learnt only by
/// reading it, so its buffer starts small and doubles as it fills, the share growing before
/// the buffer does. A compressed event of 100 bytes thus takes 8 KiB of the budget, not the
/// largest body accepted. Over budget — at the start or while growing — the buffer is freed
/// and the rest of the body read into nothing (memory stays flat), so the client, still
/// sending, receives the 503 instead of a broken connection.
pub(crate) async fn read_body(
    req: &Request,
    body: &mut RequestBody,
    state: &AppState,
) -> Result<ReadBody, ApiError> {
    let max_bytes = state.limits.max_body_bytes;
    let budget = &state.body_budget;
    let headers = BodyHeaders::of(req)?;
    let known = headers.real_length();
    if known.is_some_and(|n| n > max_bytes) {
        return Err(ApiError::BodyTooLarge { max_bytes });
    }
    let mut share = BudgetShare::default();
    let Ok(body) = body.take() else {
        return Ok(ReadBody {
            bytes: Vec::new(),
            share,
        });
    };
    let mut reader = body.into_async_read();
    let read_error = |e: std::io::Error| match &headers.encoding {
        Some(enc) => ApiError::MalformedJson(format!("cannot decode the {enc} request body: {e}")),
        None => ApiError::MalformedJson(format!("cannot read the request body: {e}")),
    };
    let first = known.unwrap_or(FIRST_BUFFER_BYTES).min(max_bytes);
    if !share.cover(budget, first) {
        return Err(overloaded(reader, max_bytes).await);
    }
    let mut buf = Vec::with_capacity(first);
    loop {
        if buf.len() < buf.capacity() {
            // Reads into the room left, never past it: the buffer grows only below.
            if reader.read_buf(&mut buf).await.map_err(read_error)? == 0 {
                break;
            }
            continue;
        }
        let mut probe = [0u8; PROBE_BYTES];
        let n = reader.read(&mut probe).await.map_err(read_error)?;
        if n == 0 {
            break;
        }
        let len = buf.len() + n;
        if len > max_bytes {
            return Err(ApiError::BodyTooLarge { max_bytes });
        }
        let grown = buf
            .capacity()
            .saturating_mul(2)
            .max(FIRST_BUFFER_BYTES)
            .min(max_bytes)
            .max(len);
        if !share.cover(budget, grown) {
            let read = buf.len();
            drop(buf);
            drop(share);
            return Err(overloaded(reader, max_bytes.saturating_sub(read)).await);
        }
        buf.reserve_exact(grown - buf.len());
        buf.extend_from_slice(&probe[..n]);
    }
    Ok(ReadBody { bytes: buf, share })
}

/// Reads at most `up_to` more bytes of a body into nothing, so that the client sending it
/// receives the 503 instead of a broken connection; then the 503.
async fn overloaded(reader: impl AsyncRead + Unpin, up_to: usize) -> ApiError {
    let limit = u64::try_from(up_to).unwrap_or(u64::MAX).saturating_add(1);
    let _ = tokio::io::copy(&mut reader.take(limit), &mut tokio::io::sink()).await;
    ApiError::Overloaded
}

fn state(req: &Request) -> Result<&Arc<AppState>, ApiError> {
    req.data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

fn content_type(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// The media type of the body; `None` when Content-Type is missing or not a media type.
pub(crate) fn media_type(req: &Request) -> Option<Mime> {
    content_type(req)?.parse().ok()
}

fn is_ndjson(media: &Mime) -> bool {
    media.type_() == mime::APPLICATION && NDJSON_SUBTYPES.contains(&media.subtype().as_str())
}

pub(crate) fn wrong_type(req: &Request, expected: &str) -> ApiError {
    match content_type(req) {
        Some(ct) => ApiError::UnsupportedMediaType(format!(
            "Content-Type {ct:?} is not accepted here; send {expected}"
        )),
        None => ApiError::UnsupportedMediaType(format!("Content-Type is missing; send {expected}")),
    }
}

/// Which CloudEvents content modes a body may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudEventsModes {
    None,
    /// One event: structured (`application/cloudevents+json`) or binary (`ce-*` headers).
    Single,
    /// Batched (`application/cloudevents-batch+json`).
    Batch,
}

/// What a [`JsonBody`] is declared as in the OpenAPI document.
pub trait BodySchema: Type {
    /// Whether the body may also be NDJSON (`application/x-ndjson`, one element per line).
    const NDJSON: bool = false;
    /// Which CloudEvents content modes it may be in.
    const CLOUDEVENTS: CloudEventsModes = CloudEventsModes::None;
}

/// `POST /v1/event`: one event, or one CloudEvent.
impl BodySchema for EventIn {
    const CLOUDEVENTS: CloudEventsModes = CloudEventsModes::Single;
}

/// `POST /v1/events`: a JSON array of events, NDJSON, or a batch of CloudEvents.
impl BodySchema for Vec<EventIn> {
    const NDJSON: bool = true;
    const CLOUDEVENTS: CloudEventsModes = CloudEventsModes::Batch;
}

/// `POST /v1/find`: the filters as a JSON object.
impl BodySchema for FindRequest {}

/// How a [`JsonBody`] was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
    /// A structured-mode CloudEvent.
    CloudEvent,
    /// A batch of structured CloudEvents.
    CloudEventBatch,
    /// A binary-mode CloudEvent: its attributes are in these headers (`ce-*`, `Content-Type`).
    CloudEventBinary(HeaderMap),
}

/// What `POST /v1/event` takes, as its 415 says (on both paths alike).
pub(crate) const ONE_EVENT_MEDIA: &str =
    "application/json, application/cloudevents+json or a binary-mode CloudEvent (ce-* headers)";

/// Whether a request is a CloudEvent in binary mode: it has `ce-specversion`.
pub(crate) fn is_binary_cloudevent(req: &Request) -> bool {
    req.headers().contains_key(BINARY_MARKER_HEADER)
}

/// The CloudEvents media type of the body, if it has one (`application/cloudevents+json` or
/// `application/cloudevents-batch+json`; either is also `+json`, so it is asked first).
fn cloudevents_media(media: &Mime) -> Option<&'static str> {
    let essence = media.essence_str();
    [STRUCTURED, BATCH]
        .into_iter()
        .find(|ce| essence.eq_ignore_ascii_case(ce))
}

/// A request body declared as `T` in the OpenAPI document: the media type checked and the
/// bytes read with the size cap, but not yet parsed. It holds its share of the in-flight byte
/// budget until dropped: pass it on by value to what parses it.
pub struct JsonBody<T> {
    pub bytes: Vec<u8>,
    pub format: BodyFormat,
    _budget: BudgetShare,
    schema: PhantomData<fn() -> T>,
}

impl<T> AsRef<[u8]> for JsonBody<T> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl<'a, T: BodySchema> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
        if T::CLOUDEVENTS != CloudEventsModes::None {
            CloudEventDoc::register(registry);
        }
    }

    fn request_meta() -> Option<MetaRequest> {
        let mut content = vec![MetaMediaType {
            content_type: "application/json",
            schema: T::schema_ref(),
        }];
        if T::NDJSON {
            content.push(MetaMediaType {
                content_type: "application/x-ndjson",
                schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format(
                    "string", "ndjson",
                ))),
            });
        }
        // The CloudEvents media types are described in the operations' text, their schema
        // (`CloudEvent`) registered below, but not listed here: a second JSON media type in a
        // request body makes openapi-python-client 0.29 write a client that cannot be
        // imported (its issue #1451), and a generated client must work first time.
        Some(MetaRequest {
            description: None,
            content,
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let media = media_type(req);
        let ce_media = media.as_ref().and_then(cloudevents_media);
        let format = match (T::CLOUDEVENTS, ce_media) {
            (CloudEventsModes::Single, _) if is_binary_cloudevent(req) => {
                BodyFormat::CloudEventBinary(req.headers().clone())
            }
            (CloudEventsModes::Single, Some(STRUCTURED)) => BodyFormat::CloudEvent,
            (CloudEventsModes::Batch, Some(BATCH)) => BodyFormat::CloudEventBatch,
            (CloudEventsModes::Single, Some(_)) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "a batch of CloudEvents ({BATCH}) goes to POST /v1/events; here send one event ({STRUCTURED}, binary mode, or application/json)"
                ))
                .into())
            }
            (CloudEventsModes::Batch, Some(_)) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "one CloudEvent ({STRUCTURED}) goes to POST /v1/event; here send a batch ({BATCH}, application/json or application/x-ndjson)"
                ))
                .into())
            }
            _ => match media {
                Some(m) if is_json(&m) => BodyFormat::Json,
                Some(m) if T::NDJSON && is_ndjson(&m) => BodyFormat::Ndjson,
                _ if T::NDJSON => {
                    return Err(wrong_type(
                        req,
                        "application/json, application/x-ndjson or application/cloudevents-batch+json",
                    )
                    .into())
                }
                _ if T::CLOUDEVENTS == CloudEventsModes::Single => {
                    return Err(wrong_type(req, ONE_EVENT_MEDIA).into())
                }
                _ => return Err(wrong_type(req, "application/json").into()),
            },
        };
        let ReadBody { bytes, share } = read_body(req, body, state(req)?).await?;
        Ok(JsonBody {
            bytes,
            format,
            _budget: share,
            schema: PhantomData,
        })
    }
}

/// The optional JSON body of `GET /v1/find` (the seed's form). Not declared in the OpenAPI
/// document: GET bodies are legal but many clients cannot send them, so the query
/// parameters are the documented form. Empty when the request has no body.
pub struct OptionalFindBody {
    pub bytes: Vec<u8>,
    /// Its share of the in-flight byte budget (none for an empty body).
    _budget: BudgetShare,
}

impl<'a> poem::FromRequest<'a> for OptionalFindBody {
    async fn from_request(req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v != "0")
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(OptionalFindBody {
                bytes: Vec::new(),
                _budget: BudgetShare::default(),
            });
        }
        if content_type(req).is_some() && !media_type(req).is_some_and(|m| is_json(&m)) {
            return Err(wrong_type(req, "application/json").into());
        }
        let ReadBody { bytes, share } = read_body(req, body, state(req)?).await?;
        Ok(OptionalFindBody {
            bytes,
            _budget: share,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_budget_equal_to_the_largest_body_admits_it_in_any_size() {
        use crate::state::body_budget;
        for max in [1024, 5000, 8 * 1024 * 1024 + 1] {
            let budget = body_budget(max);
            let mut share = BudgetShare::default();
            assert!(
                share.cover(&budget, max),
                "a {max}-byte body in a {max}-byte budget"
            );
            assert!(
                !BudgetShare::default().cover(&budget, 1),
                "the budget is full"
            );
        }
    }

    use super::*;

    fn media(ct: &str) -> Mime {
        ct.parse().unwrap_or_else(|e| panic!("{ct}: {e}"))
    }

    #[test]
    fn json_and_ndjson_media_types() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/vnd.api+json",
            "application/problem+json; charset=utf-8",
        ] {
            assert!(is_json(&media(ct)), "{ct}");
            assert!(!is_ndjson(&media(ct)), "{ct}");
        }
        for ct in [
            "application/x-ndjson",
            "application/ndjson; charset=utf-8",
            "application/jsonl",
            "Application/X-JSONLines",
        ] {
            assert!(is_ndjson(&media(ct)), "{ct}");
            assert!(!is_json(&media(ct)), "{ct}");
        }
        for ct in [
            "text/plain",
            "text/json",
            "application/jsonx",
            "application/xml",
        ] {
            assert!(!is_json(&media(ct)) && !is_ndjson(&media(ct)), "{ct}");
        }
    }
}
