//! Moderation of chat content and members: keyword lists, muted members.
//!
//! - [`WordFilter`]: words that refuse a message (`blocked`) and words that are masked with `*` (`replaced`),
//!   matched without regard to ASCII case in every string value of the JSON payload (not in keys). The lists come
//!   from the configuration and, when `chat.words_file` is set, from that file, reloaded when it changes — so an
//!   operator updates them without a restart.
//! - [`Mutes`]: members a room admin has muted, optionally until a time; they still read, but cannot send.
//!
//! Sans-I/O: plain data in, verdicts out; the session applies them.

use std::collections::HashMap;
use std::time::Instant;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde_json::Value;

/// What the word filter says about a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Masked words: send this payload instead.
    Replaced(String),
    /// Refused because of this word.
    Blocked(String),
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct WordFilter {
    blocked: Option<(AhoCorasick, Vec<String>)>,
    replaced: Option<AhoCorasick>,
}

fn build(words: &[String]) -> Option<AhoCorasick> {
    let words: Vec<&str> = words.iter().map(String::as_str).filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return None;
    }
    AhoCorasickBuilder::new().ascii_case_insensitive(true).match_kind(MatchKind::LeftmostLongest).build(words).ok()
}

impl WordFilter {
    pub fn new(blocked: &[String], replaced: &[String]) -> WordFilter {
        let kept: Vec<String> = blocked.iter().filter(|w| !w.is_empty()).cloned().collect();
        WordFilter { blocked: build(&kept).map(|ac| (ac, kept)), replaced: build(replaced) }
    }

    /// Nothing to filter.
    pub fn is_empty(&self) -> bool {
        self.blocked.is_none() && self.replaced.is_none()
    }

    /// Check `payload` (JSON text).
    pub fn check(&self, payload: &str) -> Verdict {
        if self.is_empty() {
            return Verdict::Pass;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(payload) else { return Verdict::Pass };
        let mut blocked = None;
        let mut changed = false;
        self.walk(&mut value, &mut blocked, &mut changed);
        if let Some(word) = blocked {
            return Verdict::Blocked(word);
        }
        if changed {
            return Verdict::Replaced(value.to_string());
        }
        Verdict::Pass
    }

    fn walk(&self, v: &mut Value, blocked: &mut Option<String>, changed: &mut bool) {
        if blocked.is_some() {
            return;
        }
        match v {
            Value::String(s) => {
                if let Some((ac, words)) = &self.blocked {
                    if let Some(m) = ac.find(s.as_str()) {
                        *blocked = words.get(m.pattern().as_usize()).cloned();
                        return;
                    }
                }
                if let Some(ac) = &self.replaced {
                    let mut out = String::with_capacity(s.len());
                    let mut last = 0;
                    for m in ac.find_iter(s.as_str()) {
                        out.push_str(&s[last..m.start()]);
                        out.extend(s[m.start()..m.end()].chars().map(|_| '*'));
                        last = m.end();
                    }
                    if last > 0 {
                        out.push_str(&s[last..]);
                        *s = out;
                        *changed = true;
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|x| self.walk(x, blocked, changed)),
            Value::Object(map) => map.values_mut().for_each(|x| self.walk(x, blocked, changed)),
            _ => {}
        }
    }
}

/// The word lists of a `chat.words_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordLists {
    #[serde(default)]
    pub blocked: Vec<String>,
    #[serde(default)]
    pub replaced: Vec<String>,
}

impl WordLists {
    /// Read a words file.
    pub fn load(path: &std::path::Path) -> Result<WordLists, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("chat.words_file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("chat.words_file {}: {e}", path.display()))
    }
}

/// Muted members per room. See the module doc.
#[derive(Debug, Default)]
pub struct Mutes {
    /// (room, identity) → until (`None`: until unmuted).
    muted: HashMap<(String, String), Option<Instant>>,
}

impl Mutes {
    /// Mute `identity` in `room` (until `until`), or unmute.
    pub fn set(&mut self, room: &str, identity: &str, muted: bool, until: Option<Instant>) {
        let key = (room.to_string(), identity.to_string());
        if muted {
            self.muted.insert(key, until);
        } else {
            self.muted.remove(&key);
        }
    }

    /// Is `identity` muted in `room` at `now`? Expired mutes are forgotten.
    pub fn is_muted(&mut self, room: &str, identity: &str, now: Instant) -> bool {
        let key = (room.to_string(), identity.to_string());
        match self.muted.get(&key) {
            None => false,
            Some(None) => true,
            Some(Some(until)) if *until > now => true,
            Some(Some(_)) => {
                self.muted.remove(&key);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn blocked_words_refuse_and_replaced_words_are_masked_in_string_values_only() {
        let f = WordFilter::new(&words(&["spam"]), &words(&["darn", "坏话"]));
        assert_eq!(f.check(r#"{"text":"hello"}"#), Verdict::Pass);
        assert_eq!(f.check(r#"{"text":"Buy SPAM now"}"#), Verdict::Blocked("spam".into()));
        assert_eq!(f.check(r#"{"a":[1,{"b":"no spam"}]}"#), Verdict::Blocked("spam".into()), "nested");
        assert_eq!(f.check(r#"{"spam":"key, not value"}"#), Verdict::Pass, "keys are not checked");
        assert_eq!(
            f.check(r#"{"text":"Darn it, 说坏话 darn"}"#),
            Verdict::Replaced(r#"{"text":"**** it, 说** ****"}"#.into())
        );
        assert!(WordFilter::new(&[], &words(&[""])).is_empty());
    }

    #[test]
    fn mutes_expire() {
        let t0 = Instant::now();
        let mut m = Mutes::default();
        m.set("r", "troll", true, Some(t0 + Duration::from_secs(60)));
        m.set("r", "spammer", true, None);
        assert!(m.is_muted("r", "troll", t0));
        assert!(!m.is_muted("other", "troll", t0), "per room");
        assert!(!m.is_muted("r", "troll", t0 + Duration::from_secs(61)));
        assert!(m.is_muted("r", "spammer", t0 + Duration::from_secs(3600)));
        m.set("r", "spammer", false, None);
        assert!(!m.is_muted("r", "spammer", t0));
    }
}
