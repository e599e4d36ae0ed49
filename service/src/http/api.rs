//! The OpenAPI operations: thin handlers that parse, delegate to [`crate::ingest`] /
//! [`crate::find::query`] / [`crate::find::histogram`], and pick the documented response.

use std::sync::Arc;
use std::time::Duration;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi, OpenApiService, ResponseContent, Tags};

use crate::cloudevents::openapi::CloudEventsBatch;
use crate::cloudevents::{self, decode, encode};
use crate::error::{ApiError, ErrorResponse, LookupErrorResponse, OpsErrorResponse};
use crate::event::EventIn;
use crate::find::archive::{FindError, Finder};
use crate::find::histogram::{HistogramQuery, HistogramRequest, HistogramResponse, Histogrammer};
use crate::find::lookup::{self, EventStatus, Lookup};
use crate::find::query::{self, FindQuery, FindRequest, FindResponse};
use crate::http::auth::ApiKeyAuth;
use crate::http::body::{BodyFormat, JsonBody, OptionalFindBody};
use crate::ingest::{self, Accepted, BatchResponse, EventAck};
use crate::keys::{Key, Right};
use crate::state::AppState;

/// How long `/readyz` waits for the database (queue mode: how recent RabbitMQ's last answer
/// must be).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Tags)]
enum Tag {
    /// Producers: store events.
    Ingest,
    /// Readers: find events.
    Query,
    /// Probes and metrics for operators.
    Operations,
}

#[derive(ApiResponse)]
enum PostEventResponse {
    /// Stored (with the configured write concern).
    #[oai(status = 201)]
    Created(Json<EventAck>),
    /// The same event (same producer `id`, same content) was stored before; its stored `id`
    /// and `created_at` are returned and nothing new is written.
    #[oai(status = 200)]
    AlreadyStored(Json<EventAck>),
    /// Queue mode (`AUDIT_INGEST_MODE=queue`): durable in RabbitMQ (it confirmed the publish),
    /// not yet visible to find; the service writes it to MongoDB. `GET /v1/event/{id}` tells
    /// when it is stored. A repeated producer `id` is resolved then (same content: stored once;
    /// other content: not stored, dead-lettered).
    #[oai(status = 202)]
    Queued(Json<EventAck>),
}

#[derive(ApiResponse)]
enum GetEventResponse {
    /// In MongoDB (visible to find): `status` is `stored`, with the event's fields.
    #[oai(status = 200)]
    Stored(Json<EventStatus>),
    /// Queue mode: this replica published the event (RabbitMQ confirmed it); not stored yet.
    #[oai(status = 202)]
    Queued(Json<EventStatus>),
    /// Not stored, and not published recently by this replica: `{"id", "status": "unknown"}`.
    /// In queue mode an event acknowledged with 202 reads so on another replica, or after a
    /// restart, until it is stored: keep polling, or re-send it with the same `id` (safe).
    #[oai(status = 404)]
    Unknown(Json<EventStatus>),
}

/// A page of find, in the media type the reader asked for.
#[derive(ResponseContent)]
enum FindContent {
    Json(Json<FindResponse>),
    CloudEvents(CloudEventsBatch),
}

#[derive(ApiResponse)]
enum FindAnswer {
    /// One page: a `FindResponse`; or, with `Accept: application/cloudevents-batch+json`, the
    /// page's events as a JSON array of CloudEvents, with the page's `next_cursor` and
    /// `complete_until` in the headers `X-Next-Cursor` and `X-Complete-Until`.
    #[oai(status = 200)]
    Page(
        FindContent,
        /// CloudEvents answer only: the page's `next_cursor`, when more events may follow.
        #[oai(header = "X-Next-Cursor")]
        Option<String>,
        /// CloudEvents answer only: the page's `complete_until`.
        #[oai(header = "X-Complete-Until")]
        Option<String>,
    ),
}

impl FindAnswer {
    /// The page in the media type `req` accepts: CloudEvents when its `Accept` names
    /// `application/cloudevents-batch+json`, else our JSON.
    fn negotiate(req: &Request, page: FindResponse) -> Self {
        let wants_cloudevents = req
            .headers()
            .get_all(poem::http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|range| range.split(';').next())
            .any(|media| media.trim().eq_ignore_ascii_case(cloudevents::BATCH));
        if !wants_cloudevents {
            return FindAnswer::Page(FindContent::Json(Json(page)), None, None);
        }
        let events = page.events.iter().map(encode::to_cloudevent).collect();
        FindAnswer::Page(
            FindContent::CloudEvents(CloudEventsBatch(events)),
            page.next_cursor,
            Some(page.complete_until),
        )
    }
}

#[derive(Debug, Object)]
struct Readiness {
    /// `ready`
    status: String,
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// The database answered within 2 s (queue mode: RabbitMQ).
    #[oai(status = 200)]
    Ready(Json<Readiness>),
}

pub struct Api;

#[OpenApi]
impl Api {
    /// Store one event.
    ///
    /// The server assigns `created_at` (UTC, milliseconds) and, unless the producer sent one,
    /// `id`. Answers 201 only once the event is stored. Send your own `id` (24 hex chars) to
    /// make retries safe: the same event again answers 200 with the stored `id`/`created_at`;
    /// a different event with that `id` answers 409. In queue mode the answer is 202 once
    /// RabbitMQ confirmed the event (stored later; see `GET /v1/event/{id}`).
    ///
    /// A CloudEvent 1.0 is accepted too, in structured mode (`application/cloudevents+json`)
    /// or binary mode (its attributes in `ce-*` headers, the body its data; schema
    /// `CloudEvent`): `source` becomes
    /// `consumer`, the stored `id` is derived from `source` and `id` (so a retried CloudEvent
    /// is stored once, and the same `source` and `id` with other content answers 409), and
    /// the payload keeps every attribute and the data (docs/api.md, "CloudEvents"). A
    /// CloudEvent that breaks the specification's rules answers 400 `invalid_cloudevent`.
    #[oai(
        path = "/v1/event",
        method = "post",
        operation_id = "postEvent",
        tag = "Tag::Ingest"
    )]
    async fn post_event(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        body: JsonBody<EventIn>,
    ) -> Result<PostEventResponse, ErrorResponse> {
        let accepted = match body.format.clone() {
            BodyFormat::CloudEvent => {
                ingest::ingest_one_with(&state, &auth.0, move || {
                    let value = serde_json::from_slice(&body.bytes).map_err(|e| {
                        ApiError::MalformedJson(format!("request body is not valid JSON: {e}"))
                    })?;
                    decode::structured(value)
                })
                .await?
            }
            BodyFormat::CloudEventBinary(headers) => {
                ingest::ingest_one_with(&state, &auth.0, move || {
                    decode::binary(&headers, &body.bytes)
                })
                .await?
            }
            _ => ingest::ingest_one(&state, &auth.0, body).await?,
        };
        match accepted {
            Accepted::Created(ack) => Ok(PostEventResponse::Created(Json(ack))),
            Accepted::AlreadyStored(ack) => Ok(PostEventResponse::AlreadyStored(Json(ack))),
            Accepted::Queued(ack) => Ok(PostEventResponse::Queued(Json(ack))),
        }
    }

    /// Whether an event is stored.
    ///
    /// 200 `{"id", "status": "stored", "created_at", "type", "consumer", "payload"?}` once the
    /// event is in MongoDB (either mode). Queue mode: 202 `{"id", "status": "queued"}` while
    /// an event this replica published is on its way. Otherwise 404
    /// `{"id", "status": "unknown"}`: each replica remembers only what it published recently
    /// (in memory), so on another replica or after a restart a queued event reads `unknown`
    /// until it is stored — never "lost"; poll until `stored`, or re-send with the same `id`.
    ///
    /// Either right will do. A stored event of a consumer outside the API key's consumers reads
    /// `unknown`, as if it were not there; a key without the `read` right gets `id`, `status`
    /// and `created_at` only, not the event's content.
    #[oai(
        path = "/v1/event/:id",
        method = "get",
        operation_id = "getEvent",
        tag = "Tag::Ingest"
    )]
    async fn get_event(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The event's `id` (24 hex characters), as answered to its POST.
        id: Path<String>,
    ) -> Result<GetEventResponse, LookupErrorResponse> {
        Ok(match lookup::lookup(&state, &auth.0, &id.0).await? {
            Lookup::Stored(s) => GetEventResponse::Stored(Json(s)),
            Lookup::Queued(s) => GetEventResponse::Queued(Json(s)),
            Lookup::Unknown(s) => GetEventResponse::Unknown(Json(s)),
        })
    }

    /// Store many events in one request.
    ///
    /// A JSON array of events, or NDJSON (one event per line) with
    /// `Content-Type: application/x-ndjson`; at most `AUDIT_MAX_BATCH_EVENTS` events. Each
    /// event is accepted or refused on its own; `results` lists, in order, the status and the
    /// `id` or the error of every event. In queue mode each event is published on its own and
    /// the confirms are awaited together: an accepted event's status is 202.
    ///
    /// An event whose consumer is outside the API key's consumers is refused on its own (its
    /// result: 403 `consumer_not_allowed`); the others are stored. With a rate, the batch costs
    /// the key its number of events (429 for the whole batch when they do not fit now, 413
    /// when they exceed the key's burst).
    ///
    /// A batch of CloudEvents (`application/cloudevents-batch+json`, a JSON array of
    /// `CloudEvent`) is taken the same way, each mapped as `POST /v1/event` maps one.
    #[oai(
        path = "/v1/events",
        method = "post",
        operation_id = "postEvents",
        tag = "Tag::Ingest"
    )]
    async fn post_events(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        body: JsonBody<Vec<EventIn>>,
    ) -> Result<Json<BatchResponse>, ErrorResponse> {
        let answer = match body.format {
            BodyFormat::CloudEventBatch => {
                let max_events = state.limits.max_batch_events;
                ingest::ingest_many_with(&state, &auth.0, move || {
                    decode::batch(&body.bytes, max_events)
                })
                .await?
            }
            _ => {
                let ndjson = body.format == BodyFormat::Ndjson;
                ingest::ingest_many(&state, &auth.0, body, ndjson).await?
            }
        };
        Ok(Json(answer))
    }

    /// Find events.
    ///
    /// Every filter is optional. Ordered by `created_at` then `id`, ascending unless
    /// `order=desc`. When `next_cursor` is present, pass it as `cursor` (with the same
    /// filters and order) for the next page. The seed's form — the same fields as a JSON
    /// body on GET — is accepted too.
    ///
    /// Every answer carries `complete_until`: each event created before it that will ever be
    /// stored is visible already. Ascending pages stop there (the newest few seconds appear
    /// once they are complete, or at once with `include_incomplete=true` or `order=desc`),
    /// and the last page's `next_cursor` resumes from there: a reader that tails the log by
    /// cursor sees every event exactly once.
    ///
    /// With an archive configured, any time range is answered: events MongoDB may no longer
    /// hold in full are read from the Parquet archive, each event once, in the same order and
    /// under the same cursor. `tiers` says which tier(s) a page was read from; an archive that
    /// cannot be read answers 503 `archive_unavailable` with `Retry-After`.
    ///
    /// Needs the `read` right. A `consumer` outside the API key's consumers is refused (403);
    /// without `consumer`, only events of the key's consumers are returned.
    ///
    /// With `Accept: application/cloudevents-batch+json` the page is a JSON array of
    /// CloudEvents instead (`next_cursor` and `complete_until` in the `X-Next-Cursor` and
    /// `X-Complete-Until` headers): events that came in as CloudEvents as they were sent,
    /// others with their consumer as `source` and `created_at` as `time`.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/v1/find",
        method = "get",
        operation_id = "findEvents",
        tag = "Tag::Query"
    )]
    async fn find_get(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Event type (exact match).
        #[oai(name = "type")]
        kind: Query<Option<String>>,
        /// Consumer (exact match).
        consumer: Query<Option<String>>,
        /// Inclusive lower bound on `created_at`, ISO 8601 (e.g. `2022-05-22T00:00:00Z`).
        created_from: Query<Option<String>>,
        /// Exclusive upper bound on `created_at`, ISO 8601.
        created_to: Query<Option<String>>,
        /// Events per page: default 100, lowered to `AUDIT_FIND_MAX_LIMIT`.
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// `asc` (default) or `desc`.
        order: Query<Option<String>>,
        /// Ascending order only: also return events newer than `complete_until`, which are
        /// visible but may still be joined by older ones being written (default false).
        include_incomplete: Query<Option<bool>>,
        body: OptionalFindBody,
        req: &Request,
    ) -> Result<FindAnswer, ErrorResponse> {
        let from_query = FindRequest {
            kind: kind.0,
            consumer: consumer.0,
            created_from: created_from.0,
            created_to: created_to.0,
            limit: limit.0,
            cursor: cursor.0,
            order: order.0.as_deref().map(query::parse_order).transpose()?,
            include_incomplete: include_incomplete.0,
        };
        let request = if body.bytes.iter().all(u8::is_ascii_whitespace) {
            from_query
        } else {
            query::merge(from_query, FindRequest::from_json(&body.bytes)?)?
        };
        let page = find(&state, &auth.0, request).await?;
        Ok(FindAnswer::negotiate(req, page))
    }

    /// Find events (JSON body).
    ///
    /// The same fields as the query parameters of `GET /v1/find`, as a JSON object, and the
    /// same rules for the API key: the `read` right, and the key's consumers only.
    #[oai(
        path = "/v1/find",
        method = "post",
        operation_id = "findEventsPost",
        tag = "Tag::Query"
    )]
    async fn find_post(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        body: JsonBody<FindRequest>,
        req: &Request,
    ) -> Result<FindAnswer, ErrorResponse> {
        let request = FindRequest::from_json(&body.bytes)?;
        let page = find(&state, &auth.0, request).await?;
        Ok(FindAnswer::negotiate(req, page))
    }

    /// Event counts over time buckets.
    ///
    /// Counts the events `GET /v1/find` would return for the same filters and range with
    /// `include_incomplete=true`, per time bucket: the sum of the buckets is the number of
    /// events find pages through, whichever tier (MongoDB or the archive) holds them. The range
    /// defaults to the 24 h before `created_to`, which defaults to now; `created_from` must be
    /// before `created_to`.
    ///
    /// `bucket` is `auto` (default: the smallest of 1s, 5s, 10s, 30s, 1m, 5m, 10m, 30m, 1h,
    /// 3h, 6h, 12h, 1d, 7d giving at most 120 buckets) or `<n><unit>` with `n` ≥ 1 and unit `s`,
    /// `m`, `h` or `d`. Buckets are aligned to multiples of their length since the Unix epoch
    /// (UTC); the first holds `created_from`, the last `created_to` − 1 ms, and the edge buckets
    /// count only events inside the range. Every bucket is listed, empty ones included, oldest
    /// first. More than 1000 buckets → 400 `bad_query`.
    ///
    /// `by=type` or `by=consumer` breaks each bucket down: `series` lists the `top` keys
    /// (default 10, 1 to 50) with the largest totals over the range, largest first (ties by
    /// key), each bucket's `counts` gives their events and `other` the events of every other
    /// key.
    ///
    /// `complete_until` is find's: buckets after it may still grow. `tiers` lists the tiers
    /// read. Bounded by `AUDIT_FIND_TIMEOUT_MS` (503 `query_timeout`); an archive that cannot
    /// be read answers 503 `archive_unavailable` with `Retry-After`.
    ///
    /// Needs the `read` right. A `consumer` outside the API key's consumers is refused (403);
    /// without `consumer`, only events of the key's consumers are counted.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/v1/histogram",
        method = "get",
        operation_id = "histogram",
        tag = "Tag::Query"
    )]
    async fn histogram(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Event type (exact match).
        #[oai(name = "type")]
        kind: Query<Option<String>>,
        /// Consumer (exact match).
        consumer: Query<Option<String>>,
        /// Inclusive lower bound on `created_at`, ISO 8601 (default: `created_to` − 24 h).
        created_from: Query<Option<String>>,
        /// Exclusive upper bound on `created_at`, ISO 8601 (default: now).
        created_to: Query<Option<String>>,
        /// `auto` (default) or a length `<n><unit>`, unit `s`, `m`, `h` or `d` (e.g. `5m`).
        bucket: Query<Option<String>>,
        /// `type` or `consumer`: break each bucket down by that field.
        by: Query<Option<String>>,
        /// With `by`: how many keys to keep (default 10, 1 to 50); the rest are `other`.
        top: Query<Option<u32>>,
    ) -> Result<Json<HistogramResponse>, ErrorResponse> {
        let request = HistogramRequest {
            kind: kind.0,
            consumer: consumer.0,
            created_from: created_from.0,
            created_to: created_to.0,
            bucket: bucket.0,
            by: by.0,
            top: top.0,
        };
        Ok(Json(histogram(&state, &auth.0, request).await?))
    }

    /// Liveness: the process is up. Makes no database call.
    #[oai(
        path = "/healthz",
        method = "get",
        operation_id = "healthz",
        tag = "Tag::Operations"
    )]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok")
    }

    /// Readiness: the database answers within 2 s (else 503). In queue mode RabbitMQ instead:
    /// connected, and it answered within 2 s — producers need RabbitMQ, not MongoDB.
    #[oai(
        path = "/readyz",
        method = "get",
        operation_id = "readyz",
        tag = "Tag::Operations"
    )]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> Result<ReadyResponse, OpsErrorResponse> {
        if let Some(queue) = &state.queue {
            queue.ready(READY_TIMEOUT).map_err(ApiError::from)?;
            return Ok(ReadyResponse::Ready(Json(Readiness {
                status: "ready".into(),
            })));
        }
        match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => Ok(ReadyResponse::Ready(Json(Readiness {
                status: "ready".into(),
            }))),
            Ok(Err(e)) => Err(ApiError::Unavailable(e.to_string()).into()),
            Err(_) => Err(ApiError::Unavailable(format!(
                "no answer from the database within {} s",
                READY_TIMEOUT.as_secs()
            ))
            .into()),
        }
    }

    /// Prometheus metrics (text exposition format).
    ///
    /// When `AUDIT_METRICS_LISTEN_ADDR` is set, served there instead, and 404 here (so an
    /// Ingress in front of this port does not expose them).
    #[oai(
        path = "/metrics",
        method = "get",
        operation_id = "metrics",
        tag = "Tag::Operations"
    )]
    async fn metrics(
        &self,
        state: Data<&Arc<AppState>>,
    ) -> Result<PlainText<String>, OpsErrorResponse> {
        if !state.metrics_on_api_port {
            return Err(ApiError::NotFound(
                "/metrics is served on the metrics address (AUDIT_METRICS_LISTEN_ADDR)".into(),
            )
            .into());
        }
        Ok(PlainText(metrics_text(&state)?))
    }
}

/// The Prometheus text of every metric, for `GET /metrics` on either address.
pub(crate) fn metrics_text(state: &AppState) -> Result<String, ApiError> {
    state
        .metrics
        .queue_depth
        .set(i64::try_from(state.writer.queue_depth()).unwrap_or(i64::MAX));
    state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(format!("cannot render metrics: {e}")))
}

/// A find within the API key's scope: the `read` right; a `consumer` named must be one of the
/// key's, and a find naming none is limited to the key's consumers.
async fn find(state: &AppState, key: &Key, request: FindRequest) -> Result<FindResponse, ApiError> {
    key.require(Right::Read)?;
    let mut query = FindQuery::from_request(request, state.limits.find_max_limit)?;
    match &query.consumer {
        Some(consumer) => key.check_consumer(Right::Read, consumer)?,
        None => query.consumers_within = Some(key.consumers.clone()),
    }
    // Taken before the query runs: an event that lands during it is only ever newer.
    let complete_until = state.watermark.complete_until();
    let finder = Finder {
        store: &state.store,
        events: &state.events,
        archive: state.archive.as_ref(),
        metrics: &state.metrics.archive_find,
        max_time: state.limits.find_max_time,
    };
    finder.find(&query, complete_until).await.map_err(|e| {
        if matches!(e, FindError::Mongo(_) | FindError::State(_)) {
            state.metrics.store_error("find");
        }
        ApiError::from(e)
    })
}

/// A histogram within the API key's scope, as [`find`]'s.
async fn histogram(
    state: &AppState,
    key: &Key,
    request: HistogramRequest,
) -> Result<HistogramResponse, ApiError> {
    key.require(Right::Read)?;
    let mut query = HistogramQuery::from_request(request, chrono::Utc::now())?;
    match &query.find.consumer {
        Some(consumer) => key.check_consumer(Right::Read, consumer)?,
        None => query.find.consumers_within = Some(key.consumers.clone()),
    }
    let complete_until = state.watermark.complete_until();
    let histogrammer = Histogrammer {
        store: &state.store,
        events: &state.events,
        archive: state.archive.as_ref(),
        metrics: &state.metrics.histogram,
        max_time: state.limits.find_max_time,
    };
    histogrammer
        .histogram(&query, complete_until)
        .await
        .map_err(|e| {
            if matches!(e, FindError::Mongo(_) | FindError::State(_)) {
                state.metrics.store_error("histogram");
            }
            ApiError::from(e)
        })
}

/// The OpenAPI service: operations, security scheme, title and version.
pub fn api_service() -> OpenApiService<Api, ()> {
    OpenApiService::new(Api, "auditlog", env!("CARGO_PKG_VERSION")).description(
        "Audit and event log: producers POST events, readers find them. Every `/v1/*` call \
             needs the `X-Api-Key` header; a key holds the `ingest` and/or `read` right over \
             some consumers (see the security scheme), else 403. Errors have the body \
             `{\"error\": {\"code\", \"message\"}}`; 429 and 503 carry `Retry-After`.",
    )
}
