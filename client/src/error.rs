//! The client's error type: what went wrong with a call, in one line, and whether trying again
//! may help.

use std::error::Error as StdError;
use std::time::Duration;

use crate::types::ErrorDetail;

/// Everything a call of the client can fail with.
///
/// `Display` is always one line, fit for a terminal or a log field: no `Debug` dumps, no
/// nested error chains spread over lines.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The service answered with an error status. `code` and `message` come from its
    /// `{"error": {"code", "message"}}` body (or are made up from the status when a proxy
    /// answered with something else); `retry_after` is its `Retry-After` header.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer: connection refused, reset, DNS, TLS.
    #[error("{0}")]
    Transport(String),
    /// The service answered, but not with what its OpenAPI document promises.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    /// The base URL given to the client is not an `http://` or `https://` URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The producer was closed.
    #[error("the producer is closed")]
    Closed,
    /// No answer within the time allowed (the client's request timeout, or a producer's
    /// `close_timeout`).
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// Whether the same request may succeed later: 429, 502, 503, 504, no answer at all, or
    /// a request timeout. Retrying an event with the same `id` is always safe.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Api { status, .. } => is_transient_status(*status),
            Error::Transport(_) | Error::Timeout(_) => true,
            Error::Decode(_) | Error::InvalidUrl(_) | Error::Closed => false,
        }
    }

    /// The service's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error as the service's `{code, message}` pair, for reports about single events.
    pub fn detail(&self) -> ErrorDetail {
        match self {
            Error::Api { code, message, .. } => ErrorDetail {
                code: code.clone(),
                message: message.clone(),
            },
            Error::Transport(_) => ErrorDetail::new("transport", self.to_string()),
            Error::Decode(_) => ErrorDetail::new("decode", self.to_string()),
            Error::InvalidUrl(_) => ErrorDetail::new("invalid_url", self.to_string()),
            Error::Closed => ErrorDetail::new("closed", self.to_string()),
            Error::Timeout(_) => ErrorDetail::new("timeout", self.to_string()),
        }
    }

    /// A reqwest failure to get an answer from `url`, as one line naming the URL and the root
    /// cause (`cannot reach http://127.0.0.1:9/v1/event: connection refused`).
    pub(crate) fn from_reqwest(url: &str, err: &reqwest::Error) -> Error {
        let root = root_cause(err);
        if err.is_timeout() {
            Error::Timeout(format!("no answer from {url} in time"))
        } else if err.is_builder() {
            Error::InvalidUrl(format!("{url}: {root}"))
        } else if err.is_decode() || err.is_body() {
            Error::Decode(format!("{url}: {root}"))
        } else {
            Error::Transport(format!("cannot reach {url}: {root}"))
        }
    }
}

/// Statuses worth a retry: the service's `busy`/`rate_limited` (429), and a proxy or the
/// service saying it cannot serve now (502, 503, 504).
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// The innermost error's message, lowercased the way `io::Error` words are
/// ("connection refused"), without the " (os error 111)" suffix.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    one_line(&text.to_lowercase())
}

/// Collapses whitespace runs (newlines included) so a message stays on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_display_is_one_line() {
        let e = Error::Api {
            status: 401,
            code: "unauthorized".into(),
            message: "missing or wrong X-Api-Key".into(),
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "401 unauthorized: missing or wrong X-Api-Key"
        );
        assert!(!e.is_transient());
        assert_eq!(e.status(), Some(401));
    }

    #[test]
    fn transient_statuses() {
        for s in [429, 502, 503, 504] {
            assert!(is_transient_status(s));
        }
        for s in [400, 401, 403, 409, 413, 422, 500] {
            assert!(!is_transient_status(s));
        }
    }
}
