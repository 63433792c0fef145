//! The layout is a rule, not a habit: `src/` is in folders by layer (src/lib.rs), imports
//! point down the layers, and no group of modules imports each other in a circle.
//! Reads the source tree only; no server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Higher imports lower, never the other way. `domain` and `output` are beneath everything.
const LAYERS: &[(&str, u8)] = &[
    ("cli", 6),
    ("commands", 6),
    ("fleet", 5),
    ("tenant", 4),
    ("registry", 3),
    ("pg", 2),
    ("output", 1),
    ("domain", 0),
];

fn rank(module: &str) -> u8 {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS
        .iter()
        .find(|(name, _)| *name == top)
        .unwrap_or_else(|| panic!("src/{top} is in no layer: add it to LAYERS and src/lib.rs"))
        .1
}

/// `src/pg/connect.rs` -> `pg::connect`; `src/registry/mod.rs` -> `registry`.
fn module_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b` a module names outside its unit tests, resolved to the longest
/// module path that exists.
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        for n in (1..=parts.len()).rev() {
            let candidate = parts[..n].join("::");
            if modules.contains(&candidate) {
                found.insert(candidate);
                break;
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.ends_with("lib.rs") && !f.ends_with("main.rs"));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f, &src)).collect();
    files
        .iter()
        .map(|f| {
            let m = module_of(f, &src);
            let mut deps = imports(&std::fs::read_to_string(f).unwrap(), &modules);
            deps.remove(&m);
            (m, deps)
        })
        .collect()
}

#[test]
fn imports_point_down_the_layers() {
    let mut upward = Vec::new();
    for (module, deps) in graph() {
        for dep in deps {
            if rank(&dep) > rank(&module) {
                upward.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up the layers (see src/lib.rs): {upward:#?}"
    );
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let g = graph();
    fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for d in g.get(&m).into_iter().flatten() {
                if d == to {
                    return true;
                }
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        false
    }
    let cycles: Vec<String> = g
        .iter()
        .flat_map(|(m, deps)| deps.iter().map(move |d| (m, d)))
        .filter(|(m, d)| reaches(&g, d, m))
        .map(|(m, d)| format!("{m} -> {d} -> ... -> {m}"))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_checker_sees_an_upward_import() {
    let modules: BTreeSet<String> = ["pg::connect", "tenant::apply", "tenant"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let deps = imports(
        "use crate::tenant::apply::LOCK_CLASS;\n#[cfg(test)]\nmod tests { use crate::tenant; }",
        &modules,
    );
    assert_eq!(deps, BTreeSet::from(["tenant::apply".to_string()]));
    assert!(rank("tenant::apply") > rank("pg::connect"));
}
