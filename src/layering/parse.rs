//! Reading Rust source just well enough to find the crate-internal paths it uses.

use std::collections::BTreeSet;

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
pub(super) struct UsedPath {
    pub(super) segments: Vec<String>,
    /// The name under which a `pub use` makes it visible in the file's module.
    pub(super) reexported_as: Option<String>,
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
pub(super) fn used_paths(source: &str, module: &[String]) -> Vec<UsedPath> {
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
