//! Every module says what it owns: each `.rs` file of the service and of `crates/*` starts
//! with a `//!` line, and each module `lib.rs` declares has a `///` line above it.

use std::collections::BTreeMap;
use std::path::Path;

use super::read_sources;

/// The files among `sources` (path → text) whose first line is not a `//!` doc comment.
fn without_module_doc(sources: &BTreeMap<String, String>) -> Vec<String> {
    sources
        .iter()
        .filter(|(_, text)| !text.lines().next().is_some_and(|l| l.starts_with("//!")))
        .map(|(file, _)| file.clone())
        .collect()
}

/// The modules `lib` declares (`mod x;`, `pub mod x;`) without a `///` line above them
/// (attributes such as `#[cfg(test)]` may stand between).
fn undocumented_declarations(lib: &str) -> Vec<String> {
    let lines: Vec<&str> = lib.lines().map(str::trim).collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(at, line)| {
            let name = line
                .strip_prefix("pub ")
                .unwrap_or(line)
                .strip_prefix("mod ")?
                .strip_suffix(';')?;
            let documented = lines[..at]
                .iter()
                .rev()
                .find(|l| !l.starts_with("#["))
                .is_some_and(|l| l.starts_with("///"));
            (!documented).then(|| name.to_owned())
        })
        .collect()
}

/// Every `.rs` file under `src/` and `crates/*/src/`, by path from the repository root.
fn repository_sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = BTreeMap::new();
    read_sources(&root.join("src"), "src/", &mut sources);
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/ is readable") {
        let krate = entry.expect("a directory entry").path();
        let name = krate.file_name().and_then(|n| n.to_str()).expect("UTF-8");
        if krate.join("src").is_dir() {
            read_sources(
                &krate.join("src"),
                &format!("crates/{name}/src/"),
                &mut sources,
            );
        }
    }
    assert!(sources.contains_key("src/lib.rs"), "read the sources");
    sources
}

#[test]
fn every_module_starts_with_a_line_saying_what_it_owns() {
    let sources = repository_sources();
    let missing = without_module_doc(&sources);
    assert!(
        missing.is_empty(),
        "start these files with a `//!` line saying what the module owns:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn lib_rs_documents_each_module_it_declares() {
    let sources = repository_sources();
    let missing = undocumented_declarations(&sources["src/lib.rs"]);
    assert!(
        missing.is_empty(),
        "give these modules a one-line `///` doc in src/lib.rs: {missing:?}"
    );
}

#[test]
fn the_checks_can_fail() {
    let sources = BTreeMap::from([
        ("a.rs".to_owned(), "//! Owns a.\nuse x;".to_owned()),
        ("b.rs".to_owned(), "use x;\n//! Too late.".to_owned()),
        ("c.rs".to_owned(), String::new()),
        ("d.rs".to_owned(), "// A plain comment.\n".to_owned()),
    ]);
    assert_eq!(without_module_doc(&sources), ["b.rs", "c.rs", "d.rs"]);

    let lib = "//! The crate.\n\n/// Documented.\npub mod a;\n/// Documented too.\n\
               #[cfg(test)]\nmod b;\npub mod c;\n#[cfg(test)]\nmod d;\n// Not a doc.\nmod e;";
    assert_eq!(undocumented_declarations(lib), ["c", "d", "e"]);
}
