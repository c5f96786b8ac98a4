//! The layering `lib.rs` documents, checked against the source: every
//! `crate::` path in a top-level module of `src/` (outside its unit tests)
//! names a module that layer may use, and the modules form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may use. A layer uses only
/// layers below it; `shared` (ids, actors, time) uses nothing. `pb` (the
/// generated protobuf types) is vocabulary every layer may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("shared", &[]),
    ("config", &[]),
    ("drain", &[]),
    ("observe", &["shared"]),
    ("store", &["observe", "shared"]),
    ("error", &["store", "shared"]),
    ("audit", &["error", "store", "shared"]),
    ("domain", &["audit", "error", "store", "shared"]),
    ("policy", &["domain", "error", "store", "shared"]),
    (
        "decision",
        &["policy", "domain", "error", "store", "shared"],
    ),
    (
        "workflow",
        &[
            "policy", "domain", "audit", "error", "store", "shared", "observe",
        ],
    ),
    (
        "reports",
        &[
            "decision", "policy", "domain", "audit", "error", "store", "shared",
        ],
    ),
    (
        "api",
        &[
            "workflow", "reports", "decision", "policy", "domain", "audit", "error", "store",
            "shared", "config", "drain", "observe",
        ],
    ),
    (
        "server",
        &[
            "api", "workflow", "reports", "decision", "policy", "domain", "audit", "error",
            "store", "shared", "config", "drain", "observe",
        ],
    ),
    (
        "cli",
        &[
            "server", "api", "workflow", "reports", "decision", "policy", "domain", "audit",
            "error", "store", "shared", "config", "drain", "observe",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules of `src/`: `name.rs` files (but `lib.rs` and
/// `main.rs`) and directories.
fn modules() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_string();
            if path.is_dir() {
                Some(name)
            } else {
                let stem = name.strip_suffix(".rs")?;
                (stem != "lib" && stem != "main").then(|| stem.to_string())
            }
        })
        .collect()
}

/// The source files of module `name`, as paths relative to `src/`.
fn files(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let file = format!("{name}.rs");
    if src().join(&file).is_file() {
        found.push(file);
    }
    let mut dirs = vec![PathBuf::from(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(src().join(&dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let relative = dir.join(path.file_name().unwrap());
            if path.is_dir() {
                dirs.push(relative);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(relative.to_str().unwrap().replace('\\', "/"));
            }
        }
    }
    found
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first path segment after every `crate::` in `text`, including each
/// item of a `crate::{a, b::c}` group. Unit tests (from the first
/// `#[cfg(test)]` on) may reach anywhere and are not read.
fn crate_references(text: &str) -> BTreeSet<String> {
    let text = text.split("#[cfg(test)]").next().unwrap();
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.insert(identifier(&group[i..]).to_string());
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(identifier(rest).to_string());
        }
    }
    found
}

/// Module → the modules it uses, with the files that use each.
fn graph() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for file in files(module) {
            let text = std::fs::read_to_string(src().join(&file)).unwrap();
            for used in crate_references(&text) {
                if modules.contains(&used) && used != *module {
                    uses.entry(used).or_default().push(file.clone());
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let layered: BTreeSet<String> = ALLOWED.iter().map(|(m, _)| m.to_string()).collect();
    let unlayered: Vec<_> = modules().difference(&layered).cloned().collect();
    assert!(
        unlayered.is_empty(),
        "modules with no row in ALLOWED (give each a layer): {unlayered:?}"
    );
}

#[test]
fn dependencies_point_down_only() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, uses) in graph() {
        let Some(may_use) = allowed.get(module.as_str()) else {
            continue;
        };
        for (used, files) in uses {
            if may_use.contains(&used.as_str()) {
                continue;
            }
            violations.push(format!("{module} -> {used} (in {})", files.join(", ")));
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layering in lib.rs:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_allowed_dependencies_have_no_cycle() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Depth-first search for a back edge.
    fn visit<'a>(
        module: &'a str,
        allowed: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(module) {
            return;
        }
        assert!(
            !path.contains(&module),
            "cycle: {} -> {module}",
            path.join(" -> ")
        );
        path.push(module);
        for used in allowed.get(module).copied().unwrap_or_default() {
            visit(used, allowed, path, done);
        }
        path.pop();
        done.insert(module);
    }
    let mut done = BTreeSet::new();
    for module in allowed.keys() {
        visit(module, &allowed, &mut Vec::new(), &mut done);
    }
}

#[test]
fn references_are_read_from_paths_and_groups() {
    let text = "use crate::store::{Txn, keys};\nuse crate::{error::Error, pb};\n\
                fn f() { crate::shared::clock::now(); }\nlet x = notcrate::audit;\n\
                #[cfg(test)]\nmod tests { use crate::api; }";
    let found: Vec<_> = crate_references(text).into_iter().collect();
    assert_eq!(found, ["error", "pb", "shared", "store"]);
}
