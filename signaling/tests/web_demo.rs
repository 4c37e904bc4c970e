//! The web demo is in the binary: served from memory at `/` with its content type, ETag and revalidation; a
//! `web_root` directory replaces it; `web_root = ""` turns it off; and every module the page loads was embedded.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};

/// The repository's `web-demo/`.
fn web_demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-demo")
}

/// One GET over a real connection, with extra request headers: (status, response headers, body), within 5 s.
async fn get(
    s: &signaling::Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, axum::http::HeaderMap, axum::body::Bytes) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<axum::body::Bytes>>();
    let mut req = hyper::Request::builder().uri(format!("http://{}{path}", s.http_addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req.body(Empty::new()).unwrap()))
        .await
        .expect("answer within 5 s")
        .unwrap();
    let (parts, body) = res.into_parts();
    (parts.status.as_u16(), parts.headers, body.collect().await.unwrap().to_bytes())
}

fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

#[tokio::test]
async fn the_built_in_demo_is_served_from_memory() {
    let s = common::server().await;

    let (status, h, body) = get(&s, "/", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert!(String::from_utf8_lossy(&body).contains("<title>Courier demo</title>"), "the demo page");
    let (status, _, same) = get(&s, "/index.html", &[]).await;
    assert_eq!((status, &same), (200, &body), "/index.html is the page too");

    let (status, h, body) = get(&s, "/courier.js", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(&body[..], &std::fs::read(web_demo_dir().join("courier.js")).unwrap()[..], "byte-equal to the repo");
    let etag = header(&h, "etag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "a strong ETag: {etag}");

    let (status, h, body) = get(&s, "/courier.js", &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304, "revalidated");
    assert!(body.is_empty());
    assert_eq!(header(&h, "etag"), etag);
    let (status, _, _) = get(&s, "/courier.js", &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(status, 200, "another tag gets the file");

    let (status, h, _) = get(&s, "/style.css", &[]).await;
    assert_eq!((status, header(&h, "content-type")), (200, "text/css; charset=utf-8"));

    for absent in ["/nope.js", "/package.json", "/tests/harness.mjs", "/node_modules/x.js", "/protocol.d.ts"] {
        assert_eq!(get(&s, absent, &[]).await.0, 404, "{absent}");
    }
    assert_eq!(get(&s, "/healthz", &[]).await.0, 200, "the server's own routes still answer");
    s.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_web_root_directory_replaces_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<p>my own page</p>").unwrap();
    let root = dir.path().to_path_buf();
    let s = common::server_with(|raw| raw.web_root = Some(root)).await;
    let (status, _, body) = get(&s, "/", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"<p>my own page</p>"[..]));
    assert_eq!(get(&s, "/courier.js", &[]).await.0, 404, "not the embedded demo");
    s.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_empty_web_root_serves_nothing() {
    let s = common::server_with(|raw| raw.web_root = Some(PathBuf::new())).await;
    assert_eq!(get(&s, "/", &[]).await.0, 404);
    assert_eq!(get(&s, "/courier.js", &[]).await.0, 404);
    assert_eq!(get(&s, "/healthz", &[]).await.0, 200);
    s.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn a_missing_web_root_fails_at_start() {
    let raw = signaling::config::RawConfig { web_root: Some("/nonexistent/web".into()), ..Default::default() };
    let err = signaling::config::Config::resolve(raw, true).unwrap_err();
    assert!(format!("{err:#}").contains("web_root"), "{err:#}");
}

/// The relative files a page or module loads: `src="…"` / `href="…"` in HTML, `import … from './x.js'`,
/// `import './x.js'` and `export … from './x.js'` lines in a module (type-only `import('…')` in JSDoc aside).
fn references(name: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name.ends_with(".html") {
        for attr in ["src=\"", "href=\""] {
            for part in text.split(attr).skip(1) {
                let target = part.split('"').next().unwrap_or_default();
                if !target.contains(':') && !target.starts_with('#') && !target.starts_with('/') {
                    out.push(target.trim_start_matches("./").to_string());
                }
            }
        }
        return out;
    }
    for line in text.lines().map(str::trim_start) {
        if !(line.starts_with("import ") || line.starts_with("import{") || line.starts_with("export ")) {
            continue;
        }
        for quote in ['\'', '"'] {
            if let Some(spec) = line.split(quote).nth(1).filter(|s| s.starts_with("./")) {
                out.push(spec.trim_start_matches("./").to_string());
            }
        }
    }
    out
}

/// A module added to the page but not to the binary fails here: walk everything index.html loads, then every
/// module those import, and check each one is embedded, byte for byte.
#[test]
fn every_file_the_page_loads_is_embedded() {
    let dir = web_demo_dir();
    let embedded: BTreeSet<&str> = signaling::web_demo::FILES.iter().map(|f| f.path.trim_start_matches('/')).collect();
    let mut seen = BTreeSet::new();
    let mut todo = vec!["index.html".to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_else(|e| panic!("web-demo/{name}: {e}"));
        todo.extend(references(&name, &text));
    }
    for needed in ["index.html", "style.css", "app.js", "courier.js", "chat.js", "signal.js"] {
        assert!(seen.contains(needed), "the walk found {needed}; is the parser broken? {seen:?}");
    }
    let missing: Vec<_> = seen.iter().filter(|n| !embedded.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "loaded by the page but not embedded: {missing:?}");
    for f in signaling::web_demo::FILES {
        let on_disk = std::fs::read(dir.join(f.path.trim_start_matches('/'))).unwrap();
        assert!(f.body == &on_disk[..], "{} differs from web-demo/ (a stale build?)", f.path);
    }
}
