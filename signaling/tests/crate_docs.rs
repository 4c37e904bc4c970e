//! Docs that cannot drift: every crate's top doc comment lists its modules, and lists no module that is gone.
//! A newcomer reads the crate map from these lists (docs/architecture.md points at them), so a module added or
//! removed without its line fails here.

use std::collections::BTreeSet;
use std::path::Path;

/// The crates of the workspace, by their `lib.rs`, relative to this crate.
const CRATES: [&str; 5] =
    ["../sfu/src/lib.rs", "src/lib.rs", "chat/src/lib.rs", "protocol/src/lib.rs", "../media-tests/src/lib.rs"];

/// The modules a `lib.rs` declares (`mod x;` / `pub mod x;`, tests aside).
fn declared(source: &str) -> BTreeSet<String> {
    let mut cfg_test = false;
    let mut out = BTreeSet::new();
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[cfg(test)]") {
            cfg_test = true;
            continue;
        }
        let rest = line.strip_prefix("pub ").unwrap_or(line);
        if let Some(name) = rest.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            if !cfg_test {
                out.insert(name.trim().to_string());
            }
        }
        cfg_test = false;
    }
    out
}

/// The modules the top doc comment's bullets name: `` [`x`] `` at the start of a `//! - ` line (several per line
/// allowed, up to the first colon).
fn listed(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in source.lines().take_while(|l| l.starts_with("//!")) {
        let Some(item) = line.trim_start_matches("//!").trim().strip_prefix("- ") else { continue };
        let head = item.split(':').next().unwrap_or_default();
        for part in head.split("[`").skip(1) {
            if let Some(name) = part.split("`]").next() {
                // `a::B` names an item of module `a`.
                let module = name.split("::").next().unwrap_or(name);
                if module.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                    out.insert(module.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn every_crate_doc_lists_exactly_its_modules() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for lib in CRATES {
        let path = here.join(lib);
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (declared, listed) = (declared(&source), listed(&source));
        assert!(!declared.is_empty(), "{lib}: no modules found; is the parser broken?");
        for m in declared.difference(&listed) {
            problems.push(format!("{lib}: module `{m}` is not in the top doc's list"));
        }
        for m in listed.difference(&declared) {
            problems.push(format!("{lib}: the top doc lists `{m}`, which is not a module"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_a_missing_and_a_stale_module() {
    let source = "//! - [`a`]: one.\n//! - [`gone`]: old.\n\npub mod a;\nmod b;\n#[cfg(test)]\nmod tests;\n";
    assert_eq!(declared(source), ["a", "b"].map(String::from).into());
    assert_eq!(listed(source), ["a", "gone"].map(String::from).into());
}
