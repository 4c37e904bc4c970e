//! A minimal HTTP/1.1 client for the load targets' control APIs (Janus's JSON API, Pion's `/sdp`): one request per
//! connection (`Connection: close`), the whole reply read to EOF, chunked or not. No HTTP client crate is in the
//! dependency tree, and these local APIs need nothing more.

use std::net::SocketAddr;

use anyhow::{anyhow, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `method path` to `addr` with an optional `(content type, body)`; the reply's status and body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((content_type, body)) = body {
        req += &format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    } else {
        req += "\r\n";
    }
    stream.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.with_context(|| format!("{method} {path}: reading the reply"))?;
    parse_response(&out)
}

/// Status and body of a whole HTTP/1.1 response read to EOF: chunked (libmicrohttpd's replies to POST), with a
/// Content-Length, or ended by the close.
pub fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("truncated HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line: {head}"))?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_string())
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("truncated chunk"))?;
            let size_text = text(&rest[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
            rest = &rest[eol + 2..];
            if size == 0 {
                return Ok((status, text(&out)));
            }
            out.extend_from_slice(rest.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?);
            rest = rest[size..].strip_prefix(b"\r\n").ok_or_else(|| anyhow!("bad chunk end"))?;
        }
    }
    let body = match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) if n <= body.len() => &body[..n],
        _ => body,
    };
    Ok((status, text(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_response_splits_into_status_and_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw).unwrap(), (200, "{}".to_string()));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "{\"a\":1}".to_string()));
    }
}
