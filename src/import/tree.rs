//! Tokens → directives and blocks, and files → one tree with every `include` spliced in.
//!
//! Relative `include` paths resolve as NGINX resolves them, against its conf directory (here the
//! directory of the main file), falling back to the including file's directory so that snippet
//! trees copied elsewhere still import. A pattern with `*`, `?` or `[` is a glob: it may match
//! nothing, and its matches are read in name order, as NGINX's `glob(3)` gives them. A plain path
//! must exist. A file that includes itself, directly or not, is an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lex::{self, Kind, Token};

/// Where a directive was written: the file (as shown to the user) and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub loc: Loc,
    pub column: usize,
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// The directive's block, or nothing.
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The directive as crossplane's JSON shows it (`directive`, `line`, `args`, `block`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "directive": self.name,
            "line": self.loc.line,
            "args": self.args,
        });
        if let Some(b) = &self.block {
            v["block"] = b.iter().map(Directive::to_json).collect();
        }
        v
    }
}

/// Why the config could not be read: one line, starting with `file:line:column:` when it has a
/// position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TreeError(pub String);

fn at(file: &str, line: usize, column: usize, message: impl fmt::Display) -> TreeError {
    TreeError(format!("{file}:{line}:{column}: {message}"))
}

/// Parses one file's text into directives (includes not followed).
pub fn parse(text: &str, file: &str) -> Result<Vec<Directive>, TreeError> {
    let tokens = lex::tokenize(text).map_err(|e| at(file, e.line, e.column, e.message))?;
    let file: Arc<str> = file.into();
    let mut pos = 0;
    let out = block(&tokens, &mut pos, &file, None)?;
    Ok(out)
}

/// Directives up to the `}` closing `open` (or the end of the text when `open` is `None`).
fn block(
    tokens: &[Token],
    pos: &mut usize,
    file: &Arc<str>,
    open: Option<&Token>,
) -> Result<Vec<Directive>, TreeError> {
    let mut out = Vec::new();
    while let Some(t) = tokens.get(*pos) {
        *pos += 1;
        let name = match &t.kind {
            Kind::Word { text, .. } => text.clone(),
            Kind::Close if open.is_some() => return Ok(out),
            Kind::Close => return Err(at(file, t.line, t.column, "unexpected \"}\"")),
            Kind::Semicolon => return Err(at(file, t.line, t.column, "unexpected \";\"")),
            Kind::Open => return Err(at(file, t.line, t.column, "unexpected \"{\"")),
        };
        let mut args = Vec::new();
        loop {
            let Some(next) = tokens.get(*pos) else {
                let msg = format!("unexpected end of file: \"{name}\" has no \";\" or \"{{\"");
                return Err(at(file, t.line, t.column, msg));
            };
            *pos += 1;
            match &next.kind {
                Kind::Word { text, .. } => args.push(text.clone()),
                Kind::Semicolon | Kind::Open => {
                    let block = match next.kind {
                        Kind::Open => Some(block(tokens, pos, file, Some(next))?),
                        _ => None,
                    };
                    out.push(Directive {
                        name,
                        args,
                        loc: Loc {
                            file: file.clone(),
                            line: t.line,
                        },
                        column: t.column,
                        block,
                    });
                    break;
                }
                Kind::Close => {
                    let msg = format!("unexpected \"}}\": \"{name}\" has no \";\"");
                    return Err(at(file, next.line, next.column, msg));
                }
            }
        }
    }
    match open {
        Some(o) => Err(at(
            file,
            o.line,
            o.column,
            "unexpected end of file: this \"{\" is never closed",
        )),
        None => Ok(out),
    }
}

/// Reads `main` and every file it includes into one tree.
pub fn load(main: &Path) -> Result<Vec<Directive>, TreeError> {
    let dir = main.parent().unwrap_or(Path::new(""));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut loader = Loader {
        main_dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        stack: Vec::new(),
    };
    loader.file(main, None)
}

struct Loader {
    main_dir: PathBuf,
    /// The files being read, outermost first (canonical paths), to find include cycles.
    stack: Vec<PathBuf>,
}

impl Loader {
    /// How a path is shown: relative to the main file's directory when under it.
    fn shown(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.main_dir).unwrap_or(path);
        rel.display().to_string()
    }

    fn file(&mut self, path: &Path, from: Option<&Directive>) -> Result<Vec<Directive>, TreeError> {
        let cannot = |e: std::io::Error| {
            let why = format!("cannot read {}: {e}", path.display());
            match from {
                Some(d) => at(&d.loc.file, d.loc.line, d.column, format!("include: {why}")),
                None => TreeError(why),
            }
        };
        let canonical = std::fs::canonicalize(path).map_err(cannot)?;
        if let Some(i) = self.stack.iter().position(|p| *p == canonical) {
            let mut chain: Vec<String> = self.stack[i..].iter().map(|p| self.shown(p)).collect();
            chain.push(self.shown(&canonical));
            let msg = format!("include cycle: {}", chain.join(" -> "));
            return Err(match from {
                Some(d) => at(&d.loc.file, d.loc.line, d.column, msg),
                None => TreeError(msg),
            });
        }
        let text = std::fs::read_to_string(path).map_err(cannot)?;
        let shown = self.shown(&canonical);
        let tree = parse(&text, &shown)?;
        self.stack.push(canonical);
        let out = self.splice(tree, path);
        self.stack.pop();
        out
    }

    /// Replaces every `include` (at any depth) by the directives of the files it names.
    fn splice(&mut self, tree: Vec<Directive>, file: &Path) -> Result<Vec<Directive>, TreeError> {
        let mut out = Vec::with_capacity(tree.len());
        for mut d in tree {
            if d.name == "include" && d.block.is_none() && d.args.len() == 1 {
                for path in self.resolve(&d, file)? {
                    out.extend(self.file(&path, Some(&d))?);
                }
                continue;
            }
            if let Some(b) = d.block.take() {
                d.block = Some(self.splice(b, file)?);
            }
            out.push(d);
        }
        Ok(out)
    }

    /// The files an `include` names, in the order NGINX reads them.
    fn resolve(&self, d: &Directive, file: &Path) -> Result<Vec<PathBuf>, TreeError> {
        let pattern = Path::new(&d.args[0]);
        let own_dir = file.parent().unwrap_or(Path::new(""));
        let bases: Vec<&Path> = if pattern.is_absolute() {
            vec![Path::new("")]
        } else {
            vec![self.main_dir.as_path(), own_dir]
        };
        if !is_glob(&d.args[0]) {
            let first = bases[0].join(pattern);
            let found = bases.iter().map(|b| b.join(pattern)).find(|p| p.exists());
            return Ok(vec![found.unwrap_or(first)]);
        }
        for base in bases {
            let found = glob(base, pattern);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Ok(Vec::new())
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The files matching `pattern` (each component may be a glob) under `base`, sorted.
fn glob(base: &Path, pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![base.to_path_buf()];
    for comp in pattern.components() {
        let part = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for dir in &found {
            if !is_glob(&part) {
                next.push(dir.join(comp));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| glob_match(&part, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| p.is_file());
    found
}

/// `glob(3)` matching of one name: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`; a leading dot must be
/// matched literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| match_from(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(2).position(|&c| c == ']').map(|i| i + 2) else {
                return n.first() == Some(&'[') && match_from(&p[1..], &n[1..]);
            };
            let Some(&c) = n.first() else { return false };
            let (negate, set) = match p[1] {
                '!' | '^' => (true, &p[2..end]),
                _ => (false, &p[1..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && match_from(&p[end + 1..], &n[1..])
        }
        Some(&c) => n.first() == Some(&c) && match_from(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ds: &[Directive]) -> Vec<String> {
        ds.iter().map(|d| d.name.clone()).collect()
    }

    #[test]
    fn blocks_nest_and_keep_lines() {
        let t = parse("http {\n server {\n  listen 80;\n }\n}\n", "n.conf").unwrap();
        assert_eq!(names(&t), ["http"]);
        let server = &t[0].children()[0];
        assert_eq!(server.loc.line, 2);
        assert_eq!(server.children()[0].args, ["80"]);
        assert_eq!(server.children()[0].loc.to_string(), "n.conf:3");
    }

    #[test]
    fn syntax_errors_have_file_line_column() {
        let e = parse("http {\n listen 80;\n", "n.conf").unwrap_err();
        assert_eq!(
            e.0,
            "n.conf:1:6: unexpected end of file: this \"{\" is never closed"
        );
        let e = parse("a;\n}\n", "n.conf").unwrap_err();
        assert_eq!(e.0, "n.conf:2:1: unexpected \"}\"");
        let e = parse("a {\n b c }\n", "n.conf").unwrap_err();
        assert!(e.0.starts_with("n.conf:2:6: unexpected \"}\""), "{e}");
        let e = parse("listen 80", "n.conf").unwrap_err();
        assert!(e.0.starts_with("n.conf:1:1: unexpected end of file"), "{e}");
        let e = parse("{ a; }", "n.conf").unwrap_err();
        assert_eq!(e.0, "n.conf:1:1: unexpected \"{\"");
    }

    #[test]
    fn globs_match_like_glob3() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", ".hidden.conf"));
        assert!(glob_match("site-?.conf", "site-1.conf"));
        assert!(glob_match("[a-c]*", "beta"));
        assert!(!glob_match("[!a-c]*", "beta"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
    }

    fn temp(tag: &str) -> PathBuf {
        let d = crate::util::testdir::fresh(&format!("import-tree-{tag}"));
        std::fs::create_dir_all(d.join("conf.d")).unwrap();
        d
    }

    #[test]
    fn includes_splice_globs_in_order() {
        let d = temp("glob");
        std::fs::write(d.join("nginx.conf"), "http { include conf.d/*.conf; }").unwrap();
        std::fs::write(d.join("conf.d/b.conf"), "b;").unwrap();
        std::fs::write(d.join("conf.d/a.conf"), "a;\ninclude ../x.inc;").unwrap();
        std::fs::write(d.join("x.inc"), "x;").unwrap();
        let t = load(&d.join("nginx.conf")).unwrap();
        assert_eq!(names(t[0].children()), ["a", "x", "b"]);
        assert_eq!(t[0].children()[2].loc.to_string(), "conf.d/b.conf:1");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn relative_includes_fall_back_to_the_including_directory() {
        let d = temp("fallback");
        std::fs::write(d.join("nginx.conf"), "include conf.d/site.conf;").unwrap();
        std::fs::write(d.join("conf.d/site.conf"), "include part.inc;").unwrap();
        std::fs::write(d.join("conf.d/part.inc"), "p;").unwrap();
        let t = load(&d.join("nginx.conf")).unwrap();
        assert_eq!(names(&t), ["p"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_files_and_cycles_are_errors() {
        let d = temp("cycle");
        std::fs::write(d.join("nginx.conf"), "a;\ninclude conf.d/x.conf;").unwrap();
        std::fs::write(d.join("conf.d/x.conf"), "  include nginx.conf;").unwrap();
        let e = load(&d.join("nginx.conf")).unwrap_err();
        assert_eq!(
            e.0,
            "conf.d/x.conf:1:3: include cycle: nginx.conf -> conf.d/x.conf -> nginx.conf"
        );
        std::fs::write(d.join("nginx.conf"), "include missing.conf;").unwrap();
        let e = load(&d.join("nginx.conf")).unwrap_err();
        assert!(
            e.0.starts_with("nginx.conf:1:1: include: cannot read"),
            "{e}"
        );
        std::fs::write(d.join("nginx.conf"), "include none/*.conf;").unwrap();
        assert_eq!(load(&d.join("nginx.conf")).unwrap(), []);
        let _ = std::fs::remove_dir_all(&d);
    }
}
