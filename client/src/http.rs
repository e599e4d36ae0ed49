//! [`Client`]: one typed call per endpoint of the API, over a shared reqwest connection pool.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{one_line, Error};
use crate::types::{
    BatchResponse, ErrorBody, EventAck, EventStatus, FindPage, FindQuery, NewEvent, PostOutcome,
    Posted,
};

/// The header that carries the API key.
const API_KEY_HEADER: &str = "x-api-key";

/// Longer than the service's write deadline (15 s by default): a request the service is still
/// retrying through a store outage should get its answer rather than be given up on.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one auditlog service. Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base_url: String,
}

/// Builds a [`Client`] with settings other than the defaults.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: String,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
}

impl ClientBuilder {
    /// The longest a request may take, answer included (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest a connection may take to open (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The `User-Agent` header (default `auditlog-client/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base_url = check_base_url(&self.base_url)?;
        let mut headers = HeaderMap::new();
        let mut key = HeaderValue::from_str(&self.api_key).map_err(|_| {
            Error::InvalidUrl("the API key is not a valid header value".to_string())
        })?;
        key.set_sensitive(true);
        headers.insert(API_KEY_HEADER, key);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            .build()
            .map_err(|e| Error::Transport(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner { http, base_url }),
        })
    }
}

/// `http(s)://host[:port][/prefix]`, without a trailing slash.
fn check_base_url(base_url: &str) -> Result<String, Error> {
    let url =
        reqwest::Url::parse(base_url).map_err(|e| Error::InvalidUrl(format!("{base_url}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::InvalidUrl(format!(
            "{base_url}: expected http://host:port or https://host"
        )));
    }
    Ok(base_url.trim_end_matches('/').to_string())
}

impl Client {
    /// A client of the service at `base_url` (e.g. `http://127.0.0.1:8080`) with the default
    /// settings.
    pub fn new(base_url: &str, api_key: &str) -> Result<Client, Error> {
        Client::builder(base_url, api_key).build()
    }

    pub fn builder(base_url: &str, api_key: &str) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_string(),
            api_key: api_key.to_string(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("auditlog-client/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// The service's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.base_url, path)
    }

    /// `POST /v1/event`. Give the event an id to make a retry safe: the same event again
    /// answers [`PostOutcome::AlreadyStored`].
    pub async fn post_event(&self, event: &NewEvent) -> Result<Posted, Error> {
        let url = self.url("/v1/event");
        let req = self.inner.http.post(&url).json(event);
        let resp = send(&url, req).await?;
        let outcome = match resp.status().as_u16() {
            201 => PostOutcome::Created,
            200 => PostOutcome::AlreadyStored,
            202 => PostOutcome::Queued,
            _ => return Err(api_error(&url, resp).await),
        };
        let ack: EventAck = decode(&url, resp).await?;
        Ok(Posted { ack, outcome })
    }

    /// `POST /v1/events` with a JSON array: each event is accepted or refused on its own.
    pub async fn post_events(&self, events: &[NewEvent]) -> Result<BatchResponse, Error> {
        let body = serde_json::to_vec(events).map_err(|e| Error::Decode(e.to_string()))?;
        self.post_events_body(body, false).await
    }

    /// `POST /v1/events` with a JSON array already serialized (and gzip-compressed when
    /// `gzipped`): what the producer sends.
    pub(crate) async fn post_events_body(
        &self,
        body: Vec<u8>,
        gzipped: bool,
    ) -> Result<BatchResponse, Error> {
        let url = self.url("/v1/events");
        let mut req = self
            .inner
            .http
            .request(Method::POST, &url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if gzipped {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp = send(&url, req).await?;
        if resp.status() != StatusCode::OK {
            return Err(api_error(&url, resp).await);
        }
        decode(&url, resp).await
    }

    /// `GET /v1/event/{id}`: `stored`, `queued` or `unknown` (the 404 is a status answer, not
    /// an error).
    pub async fn get_event(&self, id: &str) -> Result<EventStatus, Error> {
        let url = self.url(&format!("/v1/event/{}", encode_path_segment(id)));
        let resp = send(&url, self.inner.http.get(&url)).await?;
        match resp.status().as_u16() {
            200 | 202 => decode(&url, resp).await,
            404 => {
                // A 404 with an `error` object is a real error (an unknown path), one with a
                // `status` is the answer "unknown".
                let text = resp
                    .text()
                    .await
                    .map_err(|e| Error::from_reqwest(&url, &e))?;
                match serde_json::from_str::<EventStatus>(&text) {
                    Ok(status) => Ok(status),
                    Err(_) => Err(error_from_body(&url, 404, None, &text)),
                }
            }
            _ => Err(api_error(&url, resp).await),
        }
    }

    /// One page of `GET /v1/find`; `cursor` is the previous page's `next_cursor`.
    pub async fn find_page(
        &self,
        query: &FindQuery,
        cursor: Option<&str>,
    ) -> Result<FindPage, Error> {
        let url = self.url("/v1/find");
        let req = self.inner.http.get(&url).query(&query.query_pairs(cursor));
        let resp = send(&url, req).await?;
        if resp.status() != StatusCode::OK {
            return Err(api_error(&url, resp).await);
        }
        decode(&url, resp).await
    }
}

/// `%`-encodes what could change the path (ids are hex; anything else is the caller's
/// mistake, to be refused by the service rather than sent to another route).
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn send(url: &str, req: reqwest::RequestBuilder) -> Result<Response, Error> {
    req.send().await.map_err(|e| Error::from_reqwest(url, &e))
}

async fn decode<T: DeserializeOwned>(url: &str, resp: Response) -> Result<T, Error> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Error::from_reqwest(url, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{url}: {e}")))
}

/// The error answer `resp` as an [`Error::Api`], with the service's code and message when the
/// body is an `ErrorBody`, and its `Retry-After`.
async fn api_error(url: &str, resp: Response) -> Error {
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    match resp.text().await {
        Ok(text) => error_from_body(url, status, retry_after, &text),
        Err(e) => Error::from_reqwest(url, &e),
    }
}

fn error_from_body(url: &str, status: u16, retry_after: Option<Duration>, text: &str) -> Error {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => Error::Api {
            status,
            code: body.error.code,
            message: one_line(&body.error.message),
            retry_after,
        },
        // Not the service's own answer (a proxy's 502 page, say): name the status, and keep
        // the start of the body for the reader.
        Err(_) => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            let snippet: String = one_line(text).chars().take(200).collect();
            Error::Api {
                status,
                code: reason.to_lowercase().replace(' ', "_"),
                message: if snippet.is_empty() {
                    format!("{url} answered {status} without a body")
                } else {
                    snippet
                },
                retry_after,
            }
        }
    }
}

/// `Retry-After` in whole seconds (what the service sends); an HTTP date is not used by it.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            check_base_url("http://127.0.0.1:8080/").ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert!(matches!(
            check_base_url("127.0.0.1:8080"),
            Err(Error::InvalidUrl(_))
        ));
        assert!(matches!(
            check_base_url("ftp://x"),
            Err(Error::InvalidUrl(_))
        ));
    }

    #[test]
    fn non_service_error_bodies_still_make_one_line() {
        let e = error_from_body(
            "http://x/v1/event",
            502,
            None,
            "<html>\n<b>Bad</b>\n</html>",
        );
        assert_eq!(e.to_string(), "502 bad_gateway: <html> <b>Bad</b> </html>");
        assert!(e.is_transient());
    }
}
