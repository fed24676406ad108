//! The README's layout section matches the tree: every path it names exists, and every
//! top-level module under `src/` has a line of its own.

use std::path::{Path, PathBuf};

/// The README's `### Layout` code block, a line per entry.
fn layout_block(readme: &str) -> Vec<&str> {
    let section = &readme[readme.find("### Layout\n").expect("a ### Layout section")..];
    let opening = section.find("```\n").expect("a code block in ### Layout") + 4;
    let block = &section[opening..];
    let closing = block.find("```").expect("the code block ends");
    block[..closing].lines().collect()
}

/// The names in `text` that look like paths: `x.rs`, `dir/`, `dir/x.rs` (backticks and
/// punctuation around them dropped).
fn named_paths(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|word| word.trim_matches(|c: char| "`(),;:".contains(c)))
        .filter(|word| {
            let clean = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-/.".contains(c))
            };
            clean(word) && (word.ends_with(".rs") || (word.ends_with('/') && word.len() > 1))
        })
        .collect()
}

/// Whether `name` is a path under `root`, under `root/src`, under `base` or anywhere
/// below `base`.
fn exists(root: &Path, base: &Path, name: &str) -> bool {
    let name = name.trim_end_matches('/');
    if [
        root.join(name),
        root.join("src").join(name),
        base.join(name),
    ]
    .iter()
    .any(|p| p.exists())
    {
        return true;
    }
    let mut dirs = vec![base.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.ends_with(name) {
                return true;
            }
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    false
}

/// What the layout gets wrong: entries and names that do not exist, and top-level
/// modules without an entry.
fn mismatches(root: &Path, readme: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut entries = Vec::new();
    let mut base = PathBuf::from(root);
    for line in layout_block(readme) {
        let mut description = line;
        if !line.starts_with(' ') {
            let (entry, rest) = line.split_once(' ').unwrap_or((line, ""));
            description = rest;
            if !root.join(entry).exists() {
                wrong.push(format!("{entry} does not exist"));
            }
            // `src/x.rs` describes `src/x/` too.
            let dir = entry.trim_end_matches(".rs").trim_end_matches('/');
            base = root.join(dir);
            entries.push(entry.trim_end_matches('/').to_owned());
        }
        for name in named_paths(description) {
            if !exists(root, &base, name) {
                wrong.push(format!(
                    "{name} (in the {} line) does not exist",
                    base.display()
                ));
            }
        }
    }
    for entry in std::fs::read_dir(root.join("src")).expect("src/").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("src/{name}");
        let module = format!("{}.rs", path.trim_end_matches(".rs"));
        let named = entries.contains(&path) || (entry.path().is_dir() && entries.contains(&module));
        if !named {
            wrong.push(format!("{path} has no line in the layout"));
        }
    }
    wrong
}

#[test]
fn the_readmes_layout_matches_the_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert_eq!(mismatches(root, &readme), Vec::<String>::new());
}

#[test]
fn a_missing_path_or_module_is_reported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = "### Layout\n\n```\nsrc/engine/          mod.rs and gone.rs; nowhere/\n```\n";
    let wrong = mismatches(root, readme);
    assert!(wrong.iter().any(|w| w.starts_with("gone.rs")), "{wrong:?}");
    assert!(wrong.iter().any(|w| w.starts_with("nowhere/")), "{wrong:?}");
    assert!(!wrong.iter().any(|w| w.starts_with("mod.rs")), "{wrong:?}");
    assert!(
        wrong.contains(&"src/http has no line in the layout".to_owned()),
        "{wrong:?}"
    );
    assert!(
        !wrong.iter().any(|w| w.starts_with("src/engine ")),
        "{wrong:?}"
    );
}
