//! TypeScript declarations of every wire type (feature `ts`): the text of `web-demo/protocol.d.ts`, which the JS
//! client's JSDoc types import. `tests/dts.rs` fails when the checked-in file differs from [`declarations`].
//!
//! The declarations come from the `ts_rs::TS` derives on the types, which read their serde attributes (`tag`,
//! `rename_all`, `flatten`, `skip_serializing_if` with `default`). They describe the JSON as serde encodes it, so
//! the `#[ts(...)]` attributes on the types say what ts-rs cannot see:
//! - `ts(optional)` on an `Option` left out when `None`: `field?: T` (it is never `null` on the wire);
//! - `ts(optional = nullable)` on any other field left out by `skip_serializing_if` without `default`
//!   (`ClientMsg` has no derived `Deserialize`): `field?: T`;
//! - `ts(type = "unknown")` on any-JSON fields (`serde_json::Value`, `RawValue`, payload text written raw);
//! - `ts(skip)` on the `#[serde(other)]` catch-alls (`ServerMsg::Unknown`, `ErrorCode::Unknown`): never sent.
//!
//! 64-bit integers are `number` (serde_json writes them as JSON numbers).

use ts_rs::{Config, TS};

use crate::admin::{ApiErrorBody, ParticipantList, ParticipantSummary};
use crate::chat::{
    AlertAckStatus, AlertAckView, ChatMessage, MessageState, Priority, ReceiptView, ResumePos, ResumeStatus, Target,
};
use crate::client::{ChatSend, ClientMsg, OfferTrack};
use crate::codes::ErrorCode;
use crate::grants::{Claims, Permissions, TrackSource, VideoGrant};
use crate::hooks::{HookAnswer, HookRequest};
use crate::server::{
    IceServer, Joined, LayerActive, MediaKind, ParticipantInfo, ServerMsg, SpeakerInfo, StreamStateKind, TrackInfo,
};
use crate::webhooks::{AlertView, EventKind, Facts, MessageView, ParticipantView, RecallView, RoomView, WebhookEvent};

/// Where the declarations live, from the repository root.
pub const DTS_PATH: &str = "web-demo/protocol.d.ts";

/// The command that rewrites [`DTS_PATH`] from the types.
pub const REGENERATE: &str = "UPDATE_PROTOCOL_DTS=1 cargo test -p courier-protocol --features ts --test dts";

/// The whole text of `web-demo/protocol.d.ts`.
///
/// Panics if a listed type refers to a type that is not listed (the file must be self-contained).
pub fn declarations() -> String {
    let cfg = Config::new().with_large_int("number");
    let mut out = format!(
        "// Generated from the Rust crate courier-protocol (signaling/protocol) by ts-rs: protocol v1's wire types,\n\
         // as JSON (docs/protocol.md). Do not edit; regenerate with\n\
         //   {REGENERATE}\n\
         // A field with `?` is left out when it holds its default; `unknown` is any JSON value.\n"
    );
    let mut listed = Vec::new();
    let mut deps = Vec::new();
    macro_rules! section {
        ($title:literal: $($t:ty),* $(,)?) => {
            out.push_str(concat!("\n// ", $title, "\n"));
            $( push::<$t>(&mut out, &mut listed, &mut deps, &cfg); )*
        };
    }
    section!("Messages a client sends (courier_protocol::client)": ClientMsg, ChatSend, OfferTrack);
    section!("Messages the server sends (courier_protocol::server)":
        ServerMsg, Joined, IceServer, ParticipantInfo, TrackInfo, MediaKind, SpeakerInfo, LayerActive, StreamStateKind);
    section!("Error codes (courier_protocol::codes)": ErrorCode);
    section!("Chat (courier_protocol::chat)":
        ChatMessage, Priority, MessageState, ResumePos, Target, ResumeStatus, ReceiptView, AlertAckView,
        AlertAckStatus);
    section!("Access tokens and permissions (courier_protocol::grants)": Claims, VideoGrant, Permissions, TrackSource);
    section!("Pre-send hook (courier_protocol::hooks)": HookRequest, HookAnswer);
    section!("Admin API bodies (courier_protocol::admin)": ParticipantList, ParticipantSummary, ApiErrorBody);
    section!("Webhook event bodies (courier_protocol::webhooks)":
        WebhookEvent, EventKind, Facts, RoomView, ParticipantView, MessageView, RecallView, AlertView);
    for (from, dep) in &deps {
        assert!(listed.contains(dep), "{from} refers to {dep}, which protocol.d.ts does not declare: list it");
    }
    out
}

fn push<T: TS + 'static>(out: &mut String, listed: &mut Vec<String>, deps: &mut Vec<(String, String)>, cfg: &Config) {
    let name = T::ident(cfg);
    assert!(!listed.contains(&name), "two types named {name}");
    if let Some(docs) = T::docs() {
        out.push_str(&docs);
    }
    out.push_str("export ");
    out.push_str(&pretty(&T::decl(cfg)));
    out.push('\n');
    deps.extend(T::dependencies(cfg).into_iter().map(|d| (name.clone(), d.ts_name)));
    listed.push(name);
}

/// Lays out one `type X = …;` from ts-rs (which writes it on one line) for reading: a long union one member a line,
/// a long object (or one with field docs) one field a line. Only whitespace changes.
fn pretty(decl: &str) -> String {
    let (head, body) = decl.split_once(" = ").expect("type X = …;");
    let body = body.strip_suffix(';').expect("type X = …;");
    let members = split_top(body, " | ");
    if members.len() > 1 && body.len() > 100 {
        let mut out = format!("{head} =");
        for m in members {
            out.push_str("\n  | ");
            out.push_str(&layout(m, 1));
        }
        out + ";"
    } else {
        format!("{head} = {};", layout(body, 0))
    }
}

/// `text` with each long `{ … }` in it laid out one field a line, fields at `indent + 1`.
fn layout(text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = find_top(rest, "{") {
        out.push_str(&rest[..open]);
        let close = open + matching(&rest[open..]);
        let inner = &rest[open + 1..close];
        if inner.len() <= 60 && !inner.contains("/**") {
            out.push_str(&rest[open..=close]);
        } else {
            out.push('{');
            let inner = inner.trim();
            for field in split_top(inner.strip_suffix(',').unwrap_or(inner), ", ") {
                let mut field = field.trim_start();
                if field.starts_with("/**") {
                    let end = field.find("*/").expect("a closed doc comment") + 2;
                    for line in field[..end].lines() {
                        out.push('\n');
                        out.push_str(&"  ".repeat(indent + 1));
                        out.push_str(line.trim_end());
                    }
                    field = field[end..].trim_start();
                }
                out.push('\n');
                out.push_str(&"  ".repeat(indent + 1));
                out.push_str(&layout(field, indent + 1));
                out.push(',');
            }
            out.push('\n');
            out.push_str(&"  ".repeat(indent));
            out.push('}');
        }
        rest = &rest[close + 1..];
    }
    out + rest
}

/// Walks `text` outside strings and doc comments, with the nesting depth of `{}`, `<>` and `()` at each byte.
fn walk(text: &str, mut at: impl FnMut(usize, usize) -> bool) {
    let b = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0);
    while i < b.len() {
        if text[i..].starts_with("/**") {
            i += text[i..].find("*/").expect("a closed doc comment") + 2;
            continue;
        }
        if b[i] == b'"' {
            i += 1 + text[i + 1..].find('"').expect("a closed string") + 1;
            continue;
        }
        if b[i] == b'}' || b[i] == b'>' || b[i] == b')' {
            depth -= 1;
        }
        if at(i, depth) {
            return;
        }
        if b[i] == b'{' || b[i] == b'<' || b[i] == b'(' {
            depth += 1;
        }
        i += 1;
    }
}

/// The first `pat` at depth 0.
fn find_top(text: &str, pat: &str) -> Option<usize> {
    let mut found = None;
    walk(text, |i, depth| {
        let hit = depth == 0 && text[i..].starts_with(pat);
        if hit {
            found = Some(i);
        }
        hit
    });
    found
}

/// The index of the `}` closing the `{` that `text` starts with.
fn matching(text: &str) -> usize {
    let mut found = None;
    walk(text, |i, depth| {
        let hit = depth == 0 && i > 0 && text.as_bytes()[i] == b'}';
        if hit {
            found = Some(i);
        }
        hit
    });
    found.expect("a closed object")
}

/// `text` split at each `sep` at depth 0.
fn split_top<'a>(text: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(i) = find_top(rest, sep) {
        parts.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
    }
    parts.push(rest);
    parts
}
