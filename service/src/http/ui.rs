//! The events explorer: a web page at `GET /ui` for people who do not use the API directly —
//! security analysts, compliance officers, support engineers — to find events, see them over
//! time, read one in full and export what they found. It is plain JavaScript modules, CSS and
//! one HTML file from `service/ui/`, compiled into the binary (`include_bytes!`): no build
//! step, nothing to download at run time, nothing to keep in sync. The page calls the same
//! `/v1/find` and `/v1/histogram` as any client, with the key its reader types in; the assets
//! themselves need no key. See docs/ui.md.
//!
//! Every asset is answered with `Cache-Control: no-cache` and a weak `ETag` (the SHA-256 of
//! its content, computed once; weak because the compression middleware may send the same
//! content gzipped under it), so a browser revalidates each load and gets a 304 while the
//! binary is the same; and with a Content-Security-Policy that allows only this origin (no
//! inline script or style, no framing). `AUDIT_UI_ENABLED=false` answers 404 for all of it.

use std::sync::OnceLock;

use poem::error::{MethodNotAllowedError, NotFoundError};
use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Endpoint, Request, Response};
use sha2::{Digest, Sha256};

/// Where the page is served.
pub const PATH: &str = "/ui";

/// The page's Content-Security-Policy: this origin only, for everything; no framing.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                       script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/ui/`, media type and content.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of `service/ui/`; `index.html` is also what `/ui` and `/ui/` answer.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("api.js", JS),
    asset!("state.js", JS),
    asset!("histogram.js", JS),
    asset!("table.js", JS),
    asset!("drawer.js", JS),
    asset!("export.js", JS),
    asset!("live.js", JS),
    asset!("util.js", JS),
    asset!("main.js", JS),
];

/// The weak ETag of every asset, in [`ASSETS`]' order, computed on first use.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let tag = format!("W/\"{}\"", hex::encode(&digest[..16]));
                // Hex digits always make a valid header value: the fallback is never used.
                HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("W/\"\""))
            })
            .collect()
    })
}

/// The asset a request path names: `/ui`, `/ui/` and `/ui/index.html` the page.
fn lookup(path: &str) -> Option<usize> {
    let rest = path.strip_prefix(PATH)?;
    let name = match rest {
        "" | "/" => "index.html",
        _ => rest.strip_prefix('/')?,
    };
    ASSETS.iter().position(|a| a.name == name)
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(req: &Request, etag: &HeaderValue) -> bool {
    let Some(v) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // Weak comparison (RFC 9110 §13.1.2): the opaque tags, with or without `W/`.
    let want = etag.to_str().unwrap_or_default().trim_start_matches("W/");
    v.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == want)
}

/// The endpoint of `/ui` and `/ui/<asset>`; mount it with `Route::nest_no_strip("/ui", …)`.
pub struct Ui {
    enabled: bool,
}

impl Ui {
    /// `enabled: false` (`AUDIT_UI_ENABLED=false`) answers every path 404.
    pub fn new(enabled: bool) -> Self {
        Ui { enabled }
    }
}

impl Endpoint for Ui {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if !self.enabled {
            return Err(NotFoundError.into());
        }
        let Some(i) = lookup(req.uri().path()) else {
            return Err(NotFoundError.into());
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(MethodNotAllowedError.into());
        }
        let asset = &ASSETS[i];
        let etag = &etags()[i];
        let builder = Response::builder()
            .header(header::ETAG, etag.clone())
            .header(header::CACHE_CONTROL, "no-cache")
            .header(header::CONTENT_SECURITY_POLICY, CSP)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::REFERRER_POLICY, "no-referrer")
            .header(header::X_FRAME_OPTIONS, "DENY");
        if not_modified(&req, etag) {
            return Ok(builder.status(StatusCode::NOT_MODIFIED).finish());
        }
        let builder = builder.content_type(asset.content_type);
        Ok(if req.method() == Method::HEAD {
            builder
                .header(header::CONTENT_LENGTH, asset.body.len())
                .finish()
        } else {
            builder.body(asset.body)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use poem::http::Uri;
    use poem::{EndpointExt, Route};

    use super::*;

    fn app(enabled: bool) -> impl Endpoint<Output = Response> {
        Route::new()
            .nest_no_strip(PATH, Ui::new(enabled))
            .catch_all_error(|e| async move { crate::error::from_poem_error(e) })
    }

    fn get(path: &str) -> poem::RequestBuilder {
        Request::builder()
            .method(Method::GET)
            .uri(Uri::try_from(path).unwrap())
    }

    /// The size budget of docs/ui.md: every asset gzipped, together, under 200 KB.
    #[test]
    fn the_assets_fit_in_their_size_budget() {
        let mut total = 0;
        for a in ASSETS {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(a.body).unwrap();
            total += gz.finish().unwrap().len();
        }
        println!("assets gzipped: {total} bytes");
        assert!(total < 200 * 1000, "the assets take {total} bytes gzipped");
    }

    /// index.html and the modules name only embedded assets, and every file of service/ui is
    /// embedded.
    #[test]
    fn every_asset_named_exists_and_every_file_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        let index = std::str::from_utf8(ASSETS[0].body).unwrap();
        let mut named = 0;
        for part in index.split("/ui/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                .collect();
            if name.is_empty() {
                continue;
            }
            assert!(names.contains(&name.as_str()), "index.html names {name}");
            named += 1;
        }
        assert!(
            named >= 3,
            "index.html names its stylesheet, icon and script"
        );
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for part in text.split("from './").skip(1) {
                let name = part.split('\'').next().unwrap();
                assert!(names.contains(&name), "{} imports {name}", a.name);
            }
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/ui");
        for entry in std::fs::read_dir(dir).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            assert!(names.contains(&file.as_str()), "{file} is not embedded");
        }
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_with_their_headers() {
        let app = app(true);
        for path in ["/ui", "/ui/", "/ui/index.html"] {
            let resp = app.call(get(path).finish()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(
                resp.content_type(),
                Some("text/html; charset=utf-8"),
                "{path}"
            );
            assert_eq!(resp.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(resp.headers()[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
        }
        let resp = app.call(get("/ui/main.js").finish()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.content_type(), Some(JS));
        let etag = resp.headers()[header::ETAG].clone();
        assert!(etag.to_str().unwrap().starts_with("W/\""), "a weak ETag");
        let body = resp.into_body().into_bytes().await.unwrap();
        assert!(body.starts_with(b"// @ts-check"));

        let resp = app
            .call(
                get("/ui/main.js")
                    .header(header::IF_NONE_MATCH, etag.clone())
                    .finish(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(resp.headers()[header::ETAG], etag);
        assert!(resp.into_body().into_bytes().await.unwrap().is_empty());

        let resp = app
            .call(
                get("/ui/main.js")
                    .header(header::IF_NONE_MATCH, "\"other\"")
                    .finish(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);

        for path in ["/ui/nope.js", "/ui/../Cargo.toml", "/ui/api.js/x", "/uix"] {
            let resp = app.call(get(path).finish()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let resp = app
            .call(
                Request::builder()
                    .method(Method::POST)
                    .uri_str("/ui")
                    .finish(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn switched_off_it_answers_404() {
        let app = app(false);
        for path in ["/ui", "/ui/", "/ui/main.js"] {
            let resp = app.call(get(path).finish()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(resp
                .headers()
                .get(header::CONTENT_SECURITY_POLICY)
                .is_none());
        }
    }
}
