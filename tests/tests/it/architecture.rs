//! The house rules, checked on the sources (see `docs/architecture.md`):
//!
//! - the domain depends on no other crate of the workspace, and no adapter
//!   (`mysql`, `redis`, `http`, `inprocess`, `memory`) depends on another,
//!   in any section of its `Cargo.toml`: adapters depend on the domain and
//!   the shared machinery (`concert-locking`), and on `concert-testkit` for
//!   their tests only, without its `mysql` feature;
//! - no import circles between the modules (files) of any crate;
//! - no file of `crates/http/src` over 450 lines, its tests aside.
//!
//! The circle check is `docker/modcycles.py`'s, in Rust, so `make test`
//! keeps it without Python.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("a crate dir").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

// ------------------------------------------------------------ Cargo.toml

/// The workspace crates a manifest names, by section
/// (`dependencies`, `dev-dependencies`, ...), with the line naming each.
fn workspace_deps(manifest: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if !section.ends_with("dependencies") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("concert-") {
            let name = rest
                .split(|c: char| c == '.' || c == '=' || c.is_whitespace())
                .next()
                .unwrap_or_default();
            out.push((section.clone(), format!("concert-{name}"), line.to_owned()));
        }
    }
    out
}

const ADAPTERS: [&str; 5] = ["mysql", "redis", "http", "inprocess", "memory"];

#[test]
fn no_adapter_depends_on_another_and_the_domain_on_none() {
    let mut broken = Vec::new();
    let mut seen = 0;
    for (name, dir) in crates() {
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let deps = workspace_deps(&manifest);
        let allowed = |section: &str, dep: &str, line: &str| match name.as_str() {
            "domain" => false,
            "locking" => dep == "concert-domain",
            adapter if ADAPTERS.contains(&adapter) => {
                dep == "concert-domain"
                    || dep == "concert-locking"
                    || (dep == "concert-testkit"
                        && section == "dev-dependencies"
                        && !line.contains("mysql"))
            }
            _ => true,
        };
        for (section, dep, line) in deps {
            if !allowed(&section, &dep, &line) {
                broken.push(format!("crates/{name} [{section}]: {line}"));
            }
        }
        seen += ADAPTERS.contains(&name.as_str()) as usize;
    }
    assert_eq!(seen, ADAPTERS.len(), "every adapter crate was read");
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn the_manifest_reader_sees_every_section() {
    let deps = workspace_deps(
        "[dependencies]\nconcert-domain.workspace = true\nanyhow = \"1\"\n\
         [dev-dependencies]\nconcert-mysql = { workspace = true }\n[lints]\nconcert-x = 1\n",
    );
    let names: Vec<_> = deps
        .iter()
        .map(|(s, d, _)| (s.as_str(), d.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("dependencies", "concert-domain"),
            ("dev-dependencies", "concert-mysql")
        ]
    );
}

// ------------------------------------------------------------ http sizes

/// The lines of a source file before its `#[cfg(test)] mod tests` block.
fn non_test_lines(text: &str) -> usize {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end].lines().count()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_http_source_file_is_over_450_lines() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/http/src"), &mut files);
    assert!(files.len() > 10, "{files:?}");
    let long: Vec<_> = files
        .iter()
        .map(|f| (f, non_test_lines(&fs::read_to_string(f).unwrap())))
        .filter(|(_, n)| *n > 450)
        .collect();
    assert!(long.is_empty(), "{long:?}");
}

// ------------------------------------------------------- import circles

type Module = Vec<String>;

/// Module path -> file, for one crate's `src`.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let rel: Vec<String> = file
            .strip_prefix(src)
            .unwrap()
            .with_extension("")
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let path = match rel.as_slice() {
            [only] if only == "lib" || only == "main" => Vec::new(),
            [dirs @ .., last] if last == "mod" => dirs.to_vec(),
            _ => rel.clone(),
        };
        if path.first().is_some_and(|p| p == "bin") {
            continue;
        }
        out.insert(path, file);
    }
    out
}

/// The text without `#[cfg(test)] mod x { ... }` blocks and `//` comments.
fn strip_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let trimmed = match trimmed.strip_prefix("pub") {
            Some(t) if t.starts_with('(') => t[t.find(')').map_or(0, |i| i + 1)..].trim_start(),
            Some(t) => t.trim_start(),
            None => trimmed,
        };
        let block = trimmed.strip_prefix("mod ").and_then(|t| {
            let name_end = t.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
            t[name_end..].trim_start().strip_prefix('{')
        });
        match block {
            Some(body) => {
                let mut depth = 1;
                let mut end = body.len();
                for (i, c) in body.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                rest = &body[end..];
            }
            None => {
                out.push_str("#[cfg(test)]");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d}}` -> `a::b`, `a::c::d`.
fn expand(body: &str) -> Vec<String> {
    let Some(open) = body.find('{') else {
        return vec![body.to_owned()];
    };
    let Some(close) = body.rfind('}').filter(|c| *c > open) else {
        return Vec::new();
    };
    let prefix = &body[..open];
    let inner = &body[open + 1..close];
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
        .iter()
        .flat_map(|p| expand(p))
        .map(|e| {
            if e == "self" {
                prefix.trim_end_matches(':').to_owned()
            } else {
                format!("{prefix}{e}")
            }
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path a file names that starts at `crate`, `super` or `self`.
fn paths(s: &str) -> Vec<Vec<String>> {
    let after_word = |at: usize| !s[..at].chars().next_back().is_some_and(is_ident);
    let mut out = Vec::new();
    // `use ...;` statements, groups expanded
    let mut from = 0;
    while let Some(i) = s[from..].find("use ") {
        let at = from + i;
        from = at + 4;
        if !after_word(at) {
            continue;
        }
        let Some(end) = s[at..].find(';') else { break };
        let body: String = s[at + 4..at + end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        out.extend(expand(&body).iter().map(|p| split(p)));
    }
    // paths in expressions: crate::a::b, super::x
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = s[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if !after_word(at) {
                continue;
            }
            let end = s[at..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .map_or(s.len(), |e| at + e);
            out.push(split(s[at..end].trim_end_matches(':')));
        }
    }
    out
}

fn split(path: &str) -> Vec<String> {
    path.split("::").map(str::to_owned).collect()
}

fn crate_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mods = modules(src);
    let mut graph: BTreeMap<Module, BTreeSet<Module>> =
        mods.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (m, file) in &mods {
        if m.last().is_some_and(|l| l == "tests") {
            continue;
        }
        let text = strip_tests(&fs::read_to_string(file).unwrap());
        let name = file.file_name().unwrap().to_string_lossy();
        let dir_mod = ["mod.rs", "lib.rs", "main.rs"].contains(&name.as_ref());
        for segs in paths(&text) {
            let (mut base, mut rest): (Vec<String>, &[String]) = match segs[0].as_str() {
                "crate" => (Vec::new(), &segs[1..]),
                "super" | "self" => {
                    let base = if dir_mod {
                        m.clone()
                    } else {
                        m[..m.len().saturating_sub(1)].to_vec()
                    };
                    (base, &segs[..])
                }
                _ => continue,
            };
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
            let target = (0..=rest.len()).rev().find_map(|k| {
                let mut cand = base.clone();
                cand.extend_from_slice(&rest[..k]);
                mods.contains_key(&cand).then_some(cand)
            });
            if let Some(target) = target
                && &target != m
                && target.last().is_none_or(|l| l != "tests")
            {
                graph.get_mut(m).unwrap().insert(target);
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on: BTreeSet<&'g Module>,
        out: Vec<Vec<Module>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in &self.graph[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut found = Vec::new();
    for (name, dir) in crates() {
        for comp in circles(&crate_graph(&dir.join("src"))) {
            let mut names: Vec<_> = comp.iter().map(|m| m.join("/")).collect();
            names.sort();
            found.push(format!("{name}: {}", names.join(", ")));
        }
    }
    assert!(found.is_empty(), "import circles: {found:#?}");
}

#[test]
fn the_circle_check_finds_a_circle() {
    let dir = std::env::temp_dir().join(format!("circle-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir_all(dir.join("b")).unwrap();
    fs::write(dir.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    fs::write(dir.join("a.rs"), "use crate::b::{X, deep::Y};\n").unwrap();
    fs::write(dir.join("b/mod.rs"), "pub mod deep;\npub struct X;\n").unwrap();
    fs::write(
        dir.join("b/deep.rs"),
        "pub struct Y;\nfn f() { super::super::c::g() }\n\
         #[cfg(test)]\nmod tests { use crate::a::Z; }\n",
    )
    .unwrap();
    fs::write(
        dir.join("c.rs"),
        "// use crate::b::X;\npub fn g() { crate::a::h() }\n",
    )
    .unwrap();
    let graph = crate_graph(&dir);
    fs::remove_dir_all(&dir).unwrap();
    let m = |s: &str| -> Module { s.split('/').map(str::to_owned).collect() };
    assert_eq!(graph[&m("a")], BTreeSet::from([m("b"), m("b/deep")]));
    assert_eq!(graph[&m("b/deep")], BTreeSet::from([m("c")]));
    assert_eq!(graph[&m("c")], BTreeSet::from([m("a")]));
    let found = circles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    let mut names: Vec<_> = found[0].iter().map(|m| m.join("/")).collect();
    names.sort();
    assert_eq!(names, ["a", "b/deep", "c"]);
}
