//! The deploy kit (`deploy/`) cannot drift from the server: every example config passes the real loader, the
//! Kubernetes ConfigMap carries `deploy/k8s/courier.toml` verbatim, the Dockerfile builds a package and binary that
//! exist from files that exist, every `COURIER_*` variable the kit sets is one the server reads, and each stop
//! timeout is longer than the drain it waits for. No container engine needed; `deploy/check.py` parses the YAML.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use signaling::config::{Config, RawConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every file under `dir` (recursively) whose name ends with `suffix`, as paths relative to the repository.
fn files(dir: &str, suffix: &str) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, suffix: &str, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, suffix, out);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.insert(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo(), &repo().join(dir), suffix, &mut out);
    out
}

/// What the deployments put in the environment rather than in their files (the host's address, the keys): added
/// under a file's own values, as `COURIER_*` variables would be.
fn injected() -> RawConfig {
    RawConfig::from_env(|k| match k {
        "COURIER_PUBLIC_IP" => Some("203.0.113.10".into()),
        "COURIER_KEYS" => Some("ci:a-secret-for-the-check".into()),
        _ => None,
    })
    .unwrap()
}

#[test]
fn every_deploy_config_passes_the_loader() {
    let tomls = files("deploy", ".toml");
    for known in
        ["deploy/courier.toml", "deploy/container.toml", "deploy/compose/courier.toml", "deploy/k8s/courier.toml"]
    {
        assert!(tomls.contains(known), "{known} not found in {tomls:?}; is the walk broken?");
    }
    for rel in &tomls {
        let raw = RawConfig::from_file(&repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
        Config::resolve(raw.over(injected()), false).unwrap_or_else(|e| panic!("{rel} is refused: {e:#}"));
    }
    // The systemd example names its keys and address itself: it must start with nothing from the environment.
    let raw = RawConfig::from_file(&repo().join("deploy/courier.toml")).unwrap();
    Config::resolve(raw, false).expect("deploy/courier.toml on its own");
}

/// The text of the `courier.toml: |` block of the ConfigMap, de-indented.
fn configmap_text(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "courier.toml: |").skip(1).peekable();
    let indent = lines.peek().map(|l| l.len() - l.trim_start().len()).expect("a courier.toml block");
    let mut out = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        out.push_str(line.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

#[test]
fn the_configmap_is_the_k8s_config_file() {
    let file = read("deploy/k8s/courier.toml");
    let embedded = configmap_text(&read("deploy/k8s/configmap.yaml"));
    assert!(
        embedded == file,
        "deploy/k8s/configmap.yaml's courier.toml differs from deploy/k8s/courier.toml; copy the file into it\n\
         --- configmap ---\n{embedded}--- file ---\n{file}"
    );
}

/// `(package name, its directory)` of every workspace member.
fn workspace_packages() -> Vec<(String, PathBuf)> {
    let root: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let members = root["workspace"]["members"].as_array().expect("workspace members");
    members
        .iter()
        .map(|m| {
            let dir = repo().join(m.as_str().unwrap());
            let manifest: toml::Value =
                toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
            (manifest["package"]["name"].as_str().unwrap().to_string(), dir)
        })
        .collect()
}

/// The binaries a package builds: its `[[bin]]` names, `src/main.rs` under the package name, `src/bin/*.rs`.
fn binaries(dir: &Path) -> BTreeSet<String> {
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
    let mut out: BTreeSet<String> = manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
        .filter_map(|b| b["name"].as_str().map(str::to_string))
        .collect();
    if dir.join("src/main.rs").exists() {
        out.insert(manifest["package"]["name"].as_str().unwrap().to_string());
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
        for e in entries {
            let p = e.unwrap().path();
            out.extend(p.file_stem().map(|s| s.to_string_lossy().into_owned()));
        }
    }
    out
}

/// The value after `flag` in a command line (`-p X`, `--bin Y`).
fn arg<'a>(line: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == flag)?;
    words.next()
}

#[test]
fn the_dockerfile_builds_a_real_binary_from_real_files() {
    let dockerfile = read("deploy/Dockerfile");
    let build = dockerfile.lines().find(|l| l.contains("cargo build")).expect("a cargo build line");
    assert!(build.contains("--release") && build.contains("--locked"), "{build}");
    let package = arg(build, "-p").expect("cargo build -p PACKAGE");
    let bin = arg(build, "--bin").expect("cargo build --bin NAME");
    let packages = workspace_packages();
    let (_, dir) = packages
        .iter()
        .find(|(name, _)| name == package)
        .unwrap_or_else(|| panic!("the Dockerfile builds package {package:?}, not a workspace member: {packages:?}"));
    assert!(binaries(dir).contains(bin), "package {package} has no binary {bin:?}: {:?}", binaries(dir));
    assert!(dockerfile.contains(&format!("target/release/{bin}")), "the image copies the binary it built");
    // Every COPY from the build context names a file or directory that exists (the context is the repository).
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(repo().join(src).exists(), "{line}: {src} does not exist");
        }
    }
    let ignore = read(".dockerignore");
    for must in ["target/", "node_modules/"] {
        assert!(ignore.contains(must), ".dockerignore leaves out {must}");
    }
    assert!(!ignore.lines().any(|l| l.trim() == "web-demo" || l.trim() == "web-demo/"), "build.rs embeds web-demo/");
}

/// `COURIER_*` names in `text` (a name ends at the first character that is not A-Z, 0-9 or `_`; the pattern
/// `COURIER_*` itself is not a name).
fn courier_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("COURIER_") {
        let name: String =
            text[i..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        if name.len() > "COURIER_".len() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn every_variable_the_kit_sets_is_read_by_the_server() {
    // Read by the config loader or the CLI, as a quoted name.
    let known = [
        "signaling/src/config.rs",
        "signaling/src/main.rs",
        "signaling/src/cluster/mod.rs",
        "signaling/src/turn/mod.rs",
    ]
    .map(read)
    .concat();
    // Names of work in progress the kit already mentions (commented out until it lands).
    let coming: [&str; 0] = [];
    let mut kit = files("deploy", ".yaml");
    kit.extend(["deploy/Dockerfile", "deploy/courier.service", "deploy/env.example"].map(String::from));
    for rel in &kit {
        for name in courier_vars(&read(rel)) {
            assert!(
                known.contains(&format!("\"{name}\"")) || coming.contains(&name.as_str()),
                "{rel} sets {name}, which the server does not read"
            );
        }
    }
}

/// The number after `key` on its line (`TimeoutStopSec=15`, `stop_grace_period: 15s`).
fn number_after(text: &str, key: &str) -> u64 {
    let line = text.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
    let digits: String = line.trim_start()[key.len()..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("no number in {line:?}"))
}

fn drain_secs(rel: &str) -> u64 {
    let raw = RawConfig::from_file(&repo().join(rel)).unwrap();
    Config::resolve(raw.over(injected()), false).unwrap().drain_timeout.as_secs()
}

#[test]
fn every_stop_timeout_outlasts_the_drain() {
    let unit = read("deploy/courier.service");
    assert!(unit.lines().any(|l| l.trim() == "KillSignal=SIGTERM"), "SIGTERM drains");
    for (what, timeout, config) in [
        ("courier.service TimeoutStopSec", number_after(&unit, "TimeoutStopSec="), "deploy/courier.toml"),
        (
            "compose.yaml stop_grace_period",
            number_after(&read("deploy/compose.yaml"), "stop_grace_period:"),
            "deploy/compose/courier.toml",
        ),
        (
            "deployment.yaml terminationGracePeriodSeconds",
            number_after(&read("deploy/k8s/deployment.yaml"), "terminationGracePeriodSeconds:"),
            "deploy/k8s/courier.toml",
        ),
    ] {
        let drain = drain_secs(config);
        assert!(timeout > drain, "{what} ({timeout} s) must be above {config}'s drain_timeout_secs ({drain} s)");
    }
    assert!(drain_secs("deploy/container.toml") < 15, "the Dockerfile's docker stop -t 15 advice");
}
