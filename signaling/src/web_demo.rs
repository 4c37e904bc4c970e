//! The web demo, built into the binary: `web-demo/`'s page, styles and ES modules, embedded at compile time by
//! `build.rs` and served from memory at `/` (the page) and `/<file>`. A `courier` started anywhere serves the
//! demo; `web_root` swaps in a directory instead, or `web_root = ""` turns static files off
//! ([`crate::config::WebRoot`]).
//!
//! Each answer carries its `Content-Type`, an `ETag` computed at build time and `Cache-Control: no-cache`, so a
//! browser revalidates every load and gets `304 Not Modified` until the binary changes. Any other path is 404.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug)]
pub struct EmbeddedFile {
    /// The URL path it is served at (`/index.html`, `/courier.js`); the page is also served at `/`.
    pub path: &'static str,
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// A strong validator, quoted (`"0123456789abcdef"`): a hash of the bytes.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/web_demo.rs"));

/// The embedded file served at `path` (`/` is `index.html`).
pub fn file(path: &str) -> Option<&'static EmbeddedFile> {
    let path = if path == "/" { "/index.html" } else { path };
    FILES.iter().find(|f| f.path == path)
}

/// The fallback handler serving [`FILES`]: GET and HEAD of an embedded file; 404 for any other path.
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let Some(f) = file(uri.path()) else { return StatusCode::NOT_FOUND.into_response() };
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")]).into_response();
    }
    let common = [
        (header::ETAG, HeaderValue::from_static(f.etag)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if headers.get_all(header::IF_NONE_MATCH).iter().any(|v| matches(v, f.etag)) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, HeaderValue::from_static(f.content_type))], f.body).into_response()
}

/// Whether an `If-None-Match` value names `etag` (a list; `*`; weak comparison, as RFC 9110 asks for this header).
fn matches(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else { return false };
    value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_modules_are_embedded() {
        assert_eq!(file("/").map(|f| f.path), Some("/index.html"));
        assert_eq!(file("/courier.js").map(|f| f.content_type), Some("text/javascript; charset=utf-8"));
        assert_eq!(file("/style.css").map(|f| f.content_type), Some("text/css; charset=utf-8"));
        for absent in ["/nope.js", "/package.json", "/tests/harness.mjs", "/protocol.d.ts", "", "index.html"] {
            assert!(file(absent).is_none(), "{absent} is not served");
        }
    }

    #[test]
    fn if_none_match() {
        let etag = "\"00000000000000ab\"";
        for (header, want) in [
            ("\"00000000000000ab\"", true),
            ("W/\"00000000000000ab\"", true),
            ("\"x\", \"00000000000000ab\"", true),
            ("*", true),
            ("\"00000000000000ac\"", false),
            ("00000000000000ab", false),
            ("", false),
        ] {
            assert_eq!(matches(&HeaderValue::from_static(header), etag), want, "{header:?}");
        }
    }
}
