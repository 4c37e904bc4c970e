//! Golden tests: every JSON example in `docs/protocol.md` must parse into the type of its section and encode back
//! to the same JSON. The document is the oracle: an example that drifts from the types, or a type that drifts from
//! the document, fails here.
//!
//! "The same JSON" allows one difference: a field the example writes may be left out of the encoding (or a field
//! the example leaves out may be written) only when it holds its default — checked by removing the field and
//! seeing the encoding unchanged, not by a list of exceptions.

use serde::Serialize;
use serde_json::Value;

use courier_protocol::admin::ParticipantList;
use courier_protocol::hooks::{HookAnswer, HookRequest};
use courier_protocol::webhooks::WebhookEvent;
use courier_protocol::{Claims, ClientMsg, ServerMsg};

/// One JSON example and the section it is in.
struct Example {
    /// The `##`…`####` headings above it, outermost first.
    headings: Vec<String>,
    line: usize,
    text: String,
}

/// Every value of every fenced `json` block, with the headings above it.
fn examples(doc: &str) -> Vec<Example> {
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    // Inside a fenced block that is not JSON (its `#` lines are not headings).
    let mut in_other = false;
    for (i, line) in doc.lines().enumerate() {
        if let Some((start, text)) = block.as_mut() {
            if line.starts_with("```") {
                let (start, text) = (*start, std::mem::take(text));
                block = None;
                let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
                let mut end = 0;
                while let Some(value) = stream.next() {
                    let value = value.unwrap_or_else(|e| panic!("docs/protocol.md:{start}: not JSON: {e}"));
                    let began = end + text[end..].len() - text[end..].trim_start().len();
                    end = stream.byte_offset();
                    out.push(Example {
                        headings: headings.iter().map(|(_, h)| h.clone()).collect(),
                        line: start + text[..began].matches('\n').count(),
                        text: serde_json::to_string(&value).unwrap(),
                    });
                }
            } else {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        }
        if line.starts_with("```json") {
            block = Some((i + 2, String::new()));
        } else if line.starts_with("```") {
            in_other = !in_other;
        } else if in_other {
            continue;
        } else if let Some(rest) = line.strip_prefix('#') {
            let level = 1 + rest.chars().take_while(|c| *c == '#').count();
            if rest.starts_with(|c: char| c == '#' || c == ' ') {
                headings.retain(|(l, _)| *l < level);
                headings.push((level, line.trim_start_matches('#').trim().to_string()));
            }
        }
    }
    out
}

/// The parse-and-encode pair of one type.
type Codec = fn(&str) -> Result<String, String>;

fn codec<T: Serialize>(parse: fn(&str) -> Result<T, String>) -> impl Fn(&str) -> Result<String, String> {
    move |text| parse(text).map(|t| serde_json::to_string(&t).expect("encodes"))
}

fn client(text: &str) -> Result<String, String> {
    ClientMsg::parse(text).map(|m| m.to_json()).map_err(|e| format!("{:?}: {}", e.code, e.message))
}
fn server(text: &str) -> Result<String, String> {
    let m = ServerMsg::parse(text).map_err(|e| e.to_string())?;
    if matches!(m, ServerMsg::Unknown) {
        return Err("an unknown server message type".into());
    }
    Ok(m.to_json())
}
fn claims(text: &str) -> Result<String, String> {
    codec(|t| serde_json::from_str::<Claims>(t).map_err(|e| e.to_string()))(text)
}
fn hook(text: &str) -> Result<String, String> {
    if text.contains("\"action\"") {
        codec(|t| serde_json::from_str::<HookAnswer>(t).map_err(|e| e.to_string()))(text)
    } else {
        codec(|t| serde_json::from_str::<HookRequest>(t).map_err(|e| e.to_string()))(text)
    }
}

fn admin(text: &str) -> Result<String, String> {
    codec(|t| serde_json::from_str::<ParticipantList>(t).map_err(|e| e.to_string()))(text)
}
fn webhook(text: &str) -> Result<String, String> {
    codec(|t| serde_json::from_str::<WebhookEvent>(t).map_err(|e| e.to_string()))(text)
}

/// Which type the examples of a section are.
fn codec_for(headings: &[String]) -> Option<(&'static str, Codec)> {
    let has = |h: &str| headings.iter().any(|x| x.starts_with(h));
    if has("Access tokens") {
        Some(("token claims", claims))
    } else if has("Moderation of content") {
        Some(("pre-send hook", hook))
    } else if has("Client → server") {
        Some(("client message", client))
    } else if has("Server → client") || has("Error codes") {
        Some(("server message", server))
    } else if has("Admin API") {
        Some(("admin API participants", admin))
    } else if has("Webhooks") {
        Some(("webhook event", webhook))
    } else {
        None
    }
}

/// Where a value sits in an example.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn without(value: &Value, path: &[Seg], key: &str) -> Value {
    let mut v = value.clone();
    let mut at = &mut v;
    for seg in path {
        at = match seg {
            Seg::Key(k) => &mut at[k.as_str()],
            Seg::Index(i) => &mut at[*i],
        };
    }
    if let Value::Object(m) = at {
        m.remove(key);
    }
    v
}

/// Compares the example `x` with its encoding `e`; differences must be defaults (see the module doc).
fn compare(x: &Value, e: &Value, path: &mut Vec<Seg>, root_x: &Value, root_e: &Value, codec: Codec) -> Vec<String> {
    let mut errs = Vec::new();
    let here = format!("{path:?}");
    match (x, e) {
        (Value::Object(xm), Value::Object(em)) => {
            let keys: Vec<&String> = xm.keys().chain(em.keys().filter(|k| !xm.contains_key(*k))).collect();
            for k in keys {
                match (xm.get(k), em.get(k)) {
                    (Some(xv), Some(ev)) => {
                        path.push(Seg::Key(k.clone()));
                        errs.extend(compare(xv, ev, path, root_x, root_e, codec));
                        path.pop();
                    }
                    (Some(_), None) => {
                        // Left out of the encoding: the example's value must be the default.
                        let reduced = without(root_x, path, k);
                        let same = codec(&reduced.to_string()).ok().map(|t| serde_json::from_str::<Value>(&t).unwrap());
                        if same.as_ref() != Some(root_e) {
                            errs.push(format!("{} field {k:?} is lost in the encoding", here));
                        }
                    }
                    (None, Some(_)) => {
                        // Written by the encoder though the example leaves it out: must be a default.
                        let reduced = without(root_e, path, k);
                        let same = codec(&reduced.to_string()).ok().map(|t| serde_json::from_str::<Value>(&t).unwrap());
                        if same.as_ref() != Some(root_e) {
                            errs.push(format!("{} field {k:?} is added by the encoding", here));
                        }
                    }
                    (None, None) => unreachable!(),
                }
            }
        }
        (Value::Array(xa), Value::Array(ea)) if xa.len() == ea.len() => {
            for (i, (xv, ev)) in xa.iter().zip(ea).enumerate() {
                path.push(Seg::Index(i));
                errs.extend(compare(xv, ev, path, root_x, root_e, codec));
                path.pop();
            }
        }
        _ if x == e => {}
        _ => errs.push(format!("{} is {x} in the example but {e} encoded", here)),
    }
    errs
}

#[test]
fn every_example_of_the_protocol_document_parses_and_encodes_back() {
    let doc = include_str!("../../../docs/protocol.md");
    let all = examples(doc);
    assert!(all.len() >= 70, "found only {} examples: is the extraction broken?", all.len());
    let mut failures = Vec::new();
    let mut checked = std::collections::BTreeMap::<&str, usize>::new();
    for ex in &all {
        let Some((what, codec)) = codec_for(&ex.headings) else {
            failures.push(format!("docs/protocol.md:{} ({:?}): no type for this section", ex.line, ex.headings));
            continue;
        };
        let encoded = match codec(&ex.text) {
            Ok(e) => e,
            Err(err) => {
                failures.push(format!("docs/protocol.md:{}: {what} does not parse: {err}\n  {}", ex.line, ex.text));
                continue;
            }
        };
        *checked.entry(what).or_default() += 1;
        let x: Value = serde_json::from_str(&ex.text).unwrap();
        let e: Value = serde_json::from_str(&encoded).unwrap();
        // The encoding is stable: parsing it again gives it back.
        if codec(&encoded).as_deref() != Ok(encoded.as_str()) {
            failures
                .push(format!("docs/protocol.md:{}: the encoding does not parse back to itself: {encoded}", ex.line));
        }
        for err in compare(&x, &e, &mut Vec::new(), &x, &e, codec) {
            failures.push(format!(
                "docs/protocol.md:{}: {what}: {err}\n  example: {}\n  encoded: {encoded}",
                ex.line, ex.text
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} examples fail:\n{}", failures.len(), all.len(), failures.join("\n"));
    eprintln!("checked {checked:?}");
}

#[test]
fn the_checker_notices_a_lost_field_and_a_changed_value() {
    // A check that cannot fail proves nothing: feed it encodings that drop or change a field.
    let x: Value = serde_json::from_str(r#"{"type":"mute","track_id":"TR_1","muted":true}"#).unwrap();
    let lost: Value = serde_json::from_str(r#"{"type":"mute","track_id":"TR_1"}"#).unwrap();
    assert!(!compare(&x, &lost, &mut Vec::new(), &x, &lost, client).is_empty());
    let changed: Value = serde_json::from_str(r#"{"type":"mute","track_id":"TR_2","muted":true}"#).unwrap();
    assert!(!compare(&x, &changed, &mut Vec::new(), &x, &changed, client).is_empty());
    // A default written out is fine either way.
    let x: Value = serde_json::from_str(r#"{"type":"join","v":1,"token":"t","auto_subscribe":true}"#).unwrap();
    let e: Value = serde_json::from_str(&client(&x.to_string()).unwrap()).unwrap();
    assert!(compare(&x, &e, &mut Vec::new(), &x, &e, client).is_empty());
}
