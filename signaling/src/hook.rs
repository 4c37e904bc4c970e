//! The pre-send hook: an HTTP callback that sees every stored chat message before it is stored and may pass it,
//! change its payload, or drop it.
//!
//! The server POSTs JSON to `chat.hook_url` (`http://` or `https://`, through the [`crate::outbound`] client):
//!
//! ```json
//! {"conversation":"room:demo","sender":"alice","client_id":"7b0c-01","kind":"text","payload":{"text":"hi"}}
//! ```
//!
//! and expects `200` with `{"action":"pass"}`, `{"action":"modify","payload":{…}}` or
//! `{"action":"drop","reason":"…"}`. Anything else — a timeout (`chat.hook_timeout_ms`), a connection error, another
//! status, a body that does not parse — is a failure, and `chat.hook_fail_open` decides: pass the message unchanged
//! (open) or refuse it with `hook_unavailable` (closed). The hook runs in each connection's send pipeline, so a
//! connection's messages keep their order and a slow hook slows only the connections that are sending.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use courier_chat::NewMessage;

use crate::outbound::{callback_url, HttpClient};

/// Largest hook answer read, bytes.
const MAX_ANSWER: usize = 256 * 1024;

/// What the hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookVerdict {
    Pass,
    /// Store this payload (JSON text) instead.
    Modify(String),
    Drop(String),
    /// The hook could not be asked (the caller applies fail-open or fail-closed).
    Failed(String),
}

#[derive(Serialize)]
struct HookRequest<'a> {
    conversation: &'a str,
    sender: &'a str,
    client_id: &'a str,
    kind: &'a str,
    payload: &'a RawValue,
}

#[derive(Deserialize)]
struct HookAnswer {
    action: String,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    reason: Option<String>,
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct PreSendHook {
    url: hyper::Uri,
    timeout: Duration,
    pub fail_open: bool,
    client: HttpClient,
}

impl PreSendHook {
    /// A hook at `url` (`http://` or `https://`), asked through `client`.
    pub fn new(url: &str, timeout: Duration, fail_open: bool, client: HttpClient) -> Result<PreSendHook, String> {
        let url = callback_url("chat.hook_url", url)?;
        Ok(PreSendHook { url, timeout, fail_open, client })
    }

    /// Ask the hook about `m`.
    pub async fn check(&self, m: &NewMessage) -> HookVerdict {
        match tokio::time::timeout(self.timeout, self.ask(m)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => HookVerdict::Failed(e),
            Err(_) => HookVerdict::Failed(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    async fn ask(&self, m: &NewMessage) -> Result<HookVerdict, String> {
        let payload: &RawValue = serde_json::from_str(&m.payload).map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(&HookRequest {
            conversation: m.conversation.as_str(),
            sender: &m.sender,
            client_id: &m.client_id,
            kind: &m.kind,
            payload,
        })
        .map_err(|e| e.to_string())?;
        let request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| format!("hook request: {e}"))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!("hook answered {}", response.status()));
        }
        let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER);
        let bytes = limited.collect().await.map_err(|e| format!("hook answer: {e}"))?.to_bytes();
        let answer: HookAnswer = serde_json::from_slice(&bytes).map_err(|e| format!("hook answer: {e}"))?;
        match answer.action.as_str() {
            "pass" => Ok(HookVerdict::Pass),
            "modify" => match answer.payload {
                Some(p) => Ok(HookVerdict::Modify(p.get().to_string())),
                None => Err("hook answered modify without a payload".into()),
            },
            "drop" => Ok(HookVerdict::Drop(answer.reason.unwrap_or_else(|| "dropped by the pre-send hook".into()))),
            other => Err(format!("hook answered unknown action {other:?}")),
        }
    }
}
