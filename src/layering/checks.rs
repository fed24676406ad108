//! The layering checks on made-up crates: each must be able to fail.

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
    assert_eq!(layer_of("http/routes/tenants.rs"), Some((5, "http")));
    assert!(layer_of("services/tenants.rs") < layer_of("http/routes/tenants.rs"));
    assert!(layer_of("engine/token.rs") < layer_of("services/tenants.rs"));
    assert_eq!(layer_of("domain/time.rs"), Some((0, "foundations")));
    assert!(layer_of("store/mod.rs") < layer_of("engine/token.rs"));
    assert_eq!(layer_of("nowhere.rs"), None);
    assert_eq!(layer_of("main.rs"), None);
}
