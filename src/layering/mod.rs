//! The layering rules, checked on the source: the file-level module graph has no cycle,
//! and no module imports from a higher layer.
//!
//! Every `crate::…`, `super::…`, `self::…` and child-module path of every file under
//! `src/` becomes an edge to the file that defines what it names; a name a `mod.rs`
//! only re-exports (`pub use child::Name`) leads on to the child that defines it.

mod parse;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use parse::{used_paths, UsedPath};

/// The layers, lowest first. A module may import from its own layer and the ones below.
/// A new top-level module needs a place here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &["domain", "clock", "crypto", "share", "telemetry"],
    ),
    ("store", &["store"]),
    ("outbound", &["outbound"]),
    ("engine", &["engine"]),
    ("services", &["services"]),
    ("http", &["http", "config"]),
    ("startup", &["startup"]),
    ("commands", &["commands", "layering"]),
];

/// Edges left out of the cycle check, each with the reason it is still there.
const ALLOWED_CYCLE_EDGES: &[(&str, &str)] = &[];

/// The module path of a file under `src/`, or `None` for `main.rs` (its own crate).
fn module_of(file: &str) -> Option<Vec<String>> {
    let stem = file.strip_suffix(".rs")?;
    if stem == "main" {
        return None;
    }
    let mut segments: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if segments.last().is_some_and(|s| s == "mod" || s == "lib") {
        segments.pop();
    }
    Some(segments)
}

/// The file-level import graph of `sources` (path under `src/` → text).
fn graph(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: HashMap<Vec<String>, String> = sources
        .keys()
        .filter_map(|file| Some((module_of(file)?, file.clone())))
        .collect();
    let used: BTreeMap<&String, Vec<UsedPath>> = sources
        .iter()
        .filter_map(|(file, text)| Some((file, used_paths(text, &module_of(file)?))))
        .collect();
    let reexports: HashMap<(&str, &str), &[String]> = used
        .iter()
        .flat_map(|(file, paths)| {
            paths.iter().filter_map(|p| {
                let name = p.reexported_as.as_deref()?;
                Some(((file.as_str(), name), p.segments.as_slice()))
            })
        })
        .collect();
    // The file defining `segments`: the longest prefix that is a file's module, followed
    // through re-exports.
    let resolve = |segments: &[String]| -> Option<String> {
        let mut segments = segments.to_vec();
        for _ in 0..8 {
            let (file, item) = (0..=segments.len()).rev().find_map(|n| {
                let file = modules.get(&segments[..n])?;
                Some((file, segments.get(n)))
            })?;
            match item.and_then(|item| reexports.get(&(file.as_str(), item.as_str()))) {
                Some(target) if *target != segments.as_slice() => segments = target.to_vec(),
                _ => return Some(file.clone()),
            }
        }
        None
    };
    used.iter()
        .map(|(file, paths)| {
            let targets = paths
                .iter()
                .filter_map(|p| resolve(&p.segments))
                .filter(|target| target != *file)
                .collect();
            ((*file).clone(), targets)
        })
        .collect()
}

/// The cycles of `graph`: one per strongly connected component of two or more files, as
/// `a -> b -> … -> a` and, when the component is larger, all its files.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reaches = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(file) = todo.pop() {
            for next in graph.get(&file).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|file| (file, reaches(file))).collect();
    let mut reported = BTreeSet::new();
    let mut found = Vec::new();
    for (file, reached) in &reach {
        if !reached.contains(*file) || reported.contains(*file) {
            continue;
        }
        let component: BTreeSet<&String> = reached
            .iter()
            .filter(|other| reach.get(other).is_some_and(|r| r.contains(*file)))
            .collect();
        reported.extend(component.iter().map(|f| (*f).clone()));
        // The shortest way back to `file` inside its component, for the message.
        let mut previous: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([*file]);
        'search: while let Some(at) = queue.pop_front() {
            for next in graph.get(at).into_iter().flatten() {
                if !component.contains(next) || previous.contains_key(next) {
                    continue;
                }
                previous.insert(next, at);
                if next == *file {
                    break 'search;
                }
                queue.push_back(next);
            }
        }
        let mut back = Vec::new();
        let mut at = previous[*file];
        while at != *file {
            back.push(at.clone());
            at = previous[at];
        }
        let path: Vec<String> = std::iter::once((*file).clone())
            .chain(back.into_iter().rev())
            .chain(std::iter::once((*file).clone()))
            .collect();
        let cycle = path.join(" -> ");
        found.push(if component.len() == path.len() - 1 {
            cycle
        } else {
            let files: Vec<&str> = component.iter().map(|f| f.as_str()).collect();
            format!(
                "{cycle}, within a tangle of {} files: {}",
                files.len(),
                files.join(", ")
            )
        });
    }
    found
}

fn layer_of(file: &str) -> Option<(usize, &'static str)> {
    let top = module_of(file)?.into_iter().next()?;
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&top.as_str()))
        .map(|(rank, (name, _))| (rank, *name))
}

fn read_sources(dir: &Path, under: &str, sources: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 file name");
        let relative = format!("{under}{name}");
        if path.is_dir() {
            read_sources(&path, &format!("{relative}/"), sources);
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            sources.insert(relative, text);
        }
    }
}

fn crate_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut sources = BTreeMap::new();
    read_sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        "",
        &mut sources,
    );
    assert!(sources.contains_key("lib.rs"), "read the crate's sources");
    graph(&sources)
}

#[test]
fn the_module_graph_has_no_cycle() {
    let mut graph = crate_graph();
    for (from, to) in ALLOWED_CYCLE_EDGES {
        let edges = graph.get_mut(*from);
        assert!(
            edges.is_some_and(|edges| edges.remove(*to)),
            "the allowed edge {from} -> {to} is gone: remove it from ALLOWED_CYCLE_EDGES"
        );
    }
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles between files:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let graph = crate_graph();
    let mut problems = Vec::new();
    for (file, targets) in &graph {
        if file == "lib.rs" {
            continue;
        }
        let Some((rank, layer)) = layer_of(file) else {
            problems.push(format!(
                "src/{file} is in no layer: add its module to LAYERS"
            ));
            continue;
        };
        for target in targets.iter().filter(|t| *t != "lib.rs") {
            match layer_of(target) {
                Some((target_rank, target_layer)) if target_rank > rank => problems.push(format!(
                    "src/{file} ({layer}) imports src/{target} ({target_layer}, a higher layer)"
                )),
                Some(_) => {}
                None => problems.push(format!(
                    "src/{target} is in no layer: add its module to LAYERS"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks themselves, on made-up crates: each must be able to fail.
mod checks;

/// Every module documented in one line (`//!`, and `///` in lib.rs).
mod module_docs;

/// The README's layout section names what is in the tree.
mod readme_layout;
