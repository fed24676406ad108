//! The layering rules, checked on the source: the file-level module graph has no cycle,
//! and no module imports from a higher layer.
//!
//! Every `crate::…`, `super::…`, `self::…` and child-module path of every file under
//! `src/` becomes an edge to the file that defines what it names; a name a `mod.rs`
//! only re-exports (`pub use child::Name`) leads on to the child that defines it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// The layers, lowest first. A module may import from its own layer and the ones below.
/// A new top-level module needs a place here.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundations", &["domain", "clock", "crypto", "metrics"]),
    ("store", &["store"]),
    ("upstream", &["upstream"]),
    ("vending", &["vending"]),
    (
        "http",
        &[
            "auth",
            "error",
            "extract",
            "routes",
            "state",
            "telemetry",
            "config",
        ],
    ),
    ("startup", &["startup", "fleet"]),
    ("commands", &["cli", "operator", "demo", "layering"]),
];

/// Edges left out of the cycle check, each with the reason it is still there.
const ALLOWED_CYCLE_EDGES: &[(&str, &str)] = &[
    // The backends read ACQUIRE_TIMEOUT from their parent, which calls them: to be
    // removed when the store is split.
    ("store/postgres.rs", "store/mod.rs"),
    ("store/sqlite.rs", "store/mod.rs"),
];

/// Comments, strings and character literals blanked out (newlines kept), so that only
/// code is read.
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == 'r'
            && (i == 0
                || !is_ident(chars[i - 1])
                || (chars[i - 1] == 'b' && (i == 1 || !is_ident(chars[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
        {
            // A raw string r"…" or r#"…"# (or a raw identifier r#name).
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            i += 2 + hashes;
            while i < chars.len() {
                if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&h| h == '#') {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push(' ');
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                } else if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && next == Some('\\') {
            // Past the quote, the backslash and the escaped character.
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push(' ');
        } else {
            // Code, or the quote of a lifetime.
            out.push(c);
            i += 1;
        }
    }
    out
}

fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".to_owned());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// One path a file uses, made absolute (segments from the crate root).
#[derive(Debug, Clone)]
struct UsedPath {
    segments: Vec<String>,
    /// The name under which a `pub use` makes it visible in the file's module.
    reexported_as: Option<String>,
}

/// Reads a use tree (or an expression path) starting at `tokens[*at]`, after `prefix`;
/// pushes each leaf path with its alias.
fn use_tree(
    tokens: &[String],
    at: &mut usize,
    prefix: Vec<String>,
    leaves: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    loop {
        let Some(token) = tokens.get(*at) else {
            leaves.push((path, None));
            return;
        };
        if token == "{" {
            *at += 1;
            loop {
                match tokens.get(*at).map(String::as_str) {
                    None => return,
                    Some("}") => {
                        *at += 1;
                        return;
                    }
                    Some(",") => *at += 1,
                    Some(_) => {
                        let before = *at;
                        use_tree(tokens, at, path.clone(), leaves);
                        if *at == before {
                            *at += 1;
                        }
                    }
                }
            }
        }
        if token == "*" {
            *at += 1;
            leaves.push((path, None));
            return;
        }
        if !token.starts_with(|c: char| c.is_alphabetic() || c == '_') {
            leaves.push((path, None));
            return;
        }
        path.push(token.clone());
        *at += 1;
        if tokens.get(*at).map(String::as_str) == Some("::") {
            *at += 1;
            continue;
        }
        let alias = (tokens.get(*at).map(String::as_str) == Some("as"))
            .then(|| {
                *at += 2;
                tokens.get(*at - 1).cloned()
            })
            .flatten();
        leaves.push((path, alias));
        return;
    }
}

/// Every crate-internal path `source` uses, made absolute; `module` is the file's module
/// path (empty for lib.rs).
fn used_paths(source: &str, module: &[String]) -> Vec<UsedPath> {
    let tokens = tokens(&strip(source));
    let children: BTreeSet<&str> = tokens
        .windows(3)
        .filter(|w| w[0] == "mod" && w[2] == ";")
        .map(|w| w[1].as_str())
        .collect();
    let mut used = Vec::new();
    // Inline modules (`mod tests { … }`): their name and the brace depth they close at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        match token {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).map(String::as_str) == Some("{") => {
                inline.push((tokens[i + 1].clone(), depth));
            }
            _ => {}
        }
        let previous = i.checked_sub(1).map(|p| tokens[p].as_str());
        let starts_path = tokens.get(i + 1).map(String::as_str) == Some("::")
            && !matches!(previous, Some("::") | Some("$"))
            && (matches!(token, "crate" | "super" | "self")
                || (inline.is_empty() && children.contains(token)));
        if !starts_path {
            i += 1;
            continue;
        }
        let here: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect();
        let reexport = previous == Some("use")
            && ((i >= 2 && tokens[i - 2] == "pub") || (i >= 5 && tokens[i - 5] == "pub"));
        let mut leaves = Vec::new();
        use_tree(&tokens, &mut i, Vec::new(), &mut leaves);
        for (relative, alias) in leaves {
            let mut segments = here.clone();
            let mut rest = relative.into_iter().peekable();
            match rest.peek().map(String::as_str) {
                Some("crate") => {
                    segments.clear();
                    rest.next();
                }
                Some("super") => {
                    while rest.peek().map(String::as_str) == Some("super") {
                        segments.pop();
                        rest.next();
                    }
                }
                Some("self") => {
                    rest.next();
                }
                _ => {}
            }
            segments.extend(rest.filter(|s| s != "self"));
            let reexported_as = reexport
                .then(|| alias.or_else(|| segments.last().cloned()))
                .flatten();
            used.push(UsedPath {
                segments,
                reexported_as,
            });
        }
    }
    used
}

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
mod checks {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let sources = files
            .iter()
            .map(|(file, text)| ((*file).to_owned(), (*text).to_owned()))
            .collect();
        graph(&sources)
    }

    fn targets(graph: &BTreeMap<String, BTreeSet<String>>, file: &str) -> Vec<String> {
        graph[file].iter().cloned().collect()
    }

    #[test]
    fn use_trees_aliases_and_expression_paths_are_all_edges() {
        let graph = crate_of(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod d;"),
            (
                "a.rs",
                "use crate::{b::{self, X as Y}, c::*};\n\
                 fn f() { crate::d::run::<u8>(); }",
            ),
            ("b.rs", ""),
            ("c.rs", ""),
            ("d.rs", ""),
        ]);
        assert_eq!(targets(&graph, "a.rs"), ["b.rs", "c.rs", "d.rs"]);
    }

    #[test]
    fn comments_strings_and_test_modules_are_read_right() {
        let graph = crate_of(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
            (
                "a.rs",
                "// use crate::b;\n/* crate::b /* nested */ crate::b */\n\
                 const S: &str = \"crate::b::X\"; const R: &str = r#\"crate::b\"#;\n\
                 const C: char = '\"'; const Q: char = '\\''; fn f<'a>(x: &'a str) {}\n\
                 #[cfg(test)] mod tests { use super::*; use crate::c::Z; }",
            ),
            ("b.rs", ""),
            ("c.rs", ""),
        ]);
        assert_eq!(targets(&graph, "a.rs"), ["c.rs"]);
    }

    #[test]
    fn a_reexport_leads_to_the_defining_child() {
        let graph = crate_of(&[
            ("lib.rs", "pub mod domain; pub mod user;"),
            (
                "domain/mod.rs",
                "mod id; mod name;\npub use id::Id;\npub use name::{Name as Label};\n\
                 pub struct Local;",
            ),
            ("domain/id.rs", "use super::Label;"),
            ("domain/name.rs", ""),
            ("user.rs", "use crate::domain::{Id, Local};"),
        ]);
        assert_eq!(targets(&graph, "domain/id.rs"), ["domain/name.rs"]);
        assert_eq!(
            targets(&graph, "user.rs"),
            ["domain/id.rs", "domain/mod.rs"]
        );
        assert!(cycles(&graph).is_empty(), "{:?}", cycles(&graph));
    }

    #[test]
    fn a_child_using_its_parents_item_is_a_cycle() {
        let graph = crate_of(&[
            ("lib.rs", "pub mod routes;"),
            (
                "routes/mod.rs",
                "mod tenants; mod tokens;\npub fn helper() {}\n\
                 fn router() { tenants::router(); tokens::router(); }",
            ),
            ("routes/tenants.rs", "pub fn router() {}"),
            ("routes/tokens.rs", "use super::helper;"),
        ]);
        assert_eq!(
            cycles(&graph),
            ["routes/mod.rs -> routes/tokens.rs -> routes/mod.rs"]
        );
    }

    #[test]
    fn a_longer_cycle_is_named_in_full() {
        let graph = crate_of(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
            ("a.rs", "use crate::b::B;"),
            ("b.rs", "fn f() { crate::c::g() }"),
            ("c.rs", "use crate::a;"),
        ]);
        assert_eq!(cycles(&graph), ["a.rs -> b.rs -> c.rs -> a.rs"]);
    }

    #[test]
    fn a_tangle_names_every_file_in_it() {
        let graph = crate_of(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
            ("a.rs", "use crate::b::B;"),
            ("b.rs", "use crate::{a, c};"),
            ("c.rs", "use crate::b;"),
        ]);
        assert_eq!(
            cycles(&graph),
            ["a.rs -> b.rs -> a.rs, within a tangle of 3 files: a.rs, b.rs, c.rs"]
        );
    }

    #[test]
    fn layers_rank_the_top_level_modules() {
        assert_eq!(layer_of("routes/tenants.rs"), Some((4, "http")));
        assert_eq!(layer_of("domain/time.rs"), Some((0, "foundations")));
        assert!(layer_of("store/mod.rs") < layer_of("vending/token.rs"));
        assert_eq!(layer_of("nowhere.rs"), None);
        assert_eq!(layer_of("main.rs"), None);
    }
}
