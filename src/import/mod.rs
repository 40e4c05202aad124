//! `lb import-nginx`: an NGINX config → an lb TOML config, and a note for everything left behind.
//!
//! The pipeline, one file per step:
//!
//! ```text
//!  nginx.conf ──lex──▶ tokens ──tree──▶ directives and blocks, includes spliced in
//!             ──map (upstream, location)──▶ Import: lb's settings + the NGINX line of each
//!             ──emit──▶ TOML text with `# file:line` comments
//! ```
//!
//! - [`lex`] tokenizes as NGINX's `ngx_conf_read_token` does (quotes, escapes, `${var}`,
//!   comments); errors carry line and column.
//! - [`tree`] builds the directive tree and follows `include` (globs, the conf directory first,
//!   cycles refused).
//! - [`map`] takes the `http` context (`events`, `stream`, `mail` are skipped with a note):
//!   `upstream` blocks ([`upstream`]), `server` blocks (listeners, names, certificates) and their
//!   locations ([`location`]) become upstreams and routes; `limit_req_zone`/`limit_req` become
//!   rate limits ([`limit`]); `return` becomes a route lb answers itself ([`ret`]);
//!   `split_clients` with `proxy_pass http://$var` becomes a route's `split` ([`split`]). Every
//!   directive it does not carry over becomes a [`notes::Note`]: `nginx.conf:42: proxy_cache:
//!   not supported, ignored`. [`model`] is what an import produces; [`notes`] (notes, values
//!   with their line) sits under every other file, so the files import without a cycle.
//!   Inside [`map`], one module a directive family: `routes` (locations → routes), `wide`
//!   (server-wide directives → `[server]` keys), `listen` (listeners and hosts), `tls`
//!   (certificate lines), `by_address`; inside [`location`], `settings` (what each level
//!   inherits) and `bind` (a location → its upstream).
//! - [`emit`] writes the TOML.
//!
//! A failed import is an [`ImportError`]: a tree error, nothing to import, or refusals.
//!
//! The parser is checked against crossplane, NGINX's reference parser in Python, on real configs
//! (tests/integration/import_nginx.rs); [`dump_tree`] is what that test compares.

pub mod emit;
pub mod lex;
pub mod limit;
pub mod location;
pub mod map;
pub mod model;
pub mod notes;
pub mod realip;
pub mod ret;
pub mod route_settings;
pub mod split;
pub mod tree;
pub mod upstream;

use std::path::{Path, PathBuf};

pub use map::Options;
pub use model::{Import, Note};
pub use tree::TreeError;

/// What an import produced: the TOML and the notes for stderr.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<Note>,
}

/// [`import_with`] with the default options (security directives refuse the import).
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    import_with(path, Options::default())
}

/// Why an import wrote nothing. Each kind prints as one line, except a refusal: one
/// `file:line: ...` line per directive refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A syntax error `file:line:column: ...`, an unreadable file, an include cycle.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A config with nothing lb can serve.
    #[error("{}: {why}", path.display())]
    Nothing { path: PathBuf, why: String },
    /// Lines lb cannot carry over safely: a security directive lb cannot enforce (without
    /// `--allow-insecure`), servers lb would route differently.
    #[error("refused ({} line(s) lb cannot carry over safely):\n{}", .0.len(), lines(.0))]
    Refused(Vec<Note>),
}

/// Notes one a line.
fn lines(notes: &[Note]) -> String {
    let lines: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
    lines.join("\n")
}

/// Reads the NGINX config at `path` (and what it includes) and translates it.
pub fn import_with(path: &Path, options: Options) -> Result<Imported, ImportError> {
    let tree = tree::load(path)?;
    let conf_dir = path.parent().unwrap_or(Path::new(""));
    let conf_dir = std::fs::canonicalize(if conf_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        conf_dir
    })
    .unwrap_or_else(|_| conf_dir.to_path_buf());
    let mut notes = model::Notes::default();
    let source = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut import = map::map(&tree, &conf_dir, options, &mut notes).map_err(|e| match e {
        map::Failure::Nothing(why) => ImportError::Nothing {
            path: path.to_owned(),
            why,
        },
        map::Failure::Refused(lines) => ImportError::Refused(lines),
    })?;
    import.source = source;
    // A file included in several places repeats its notes word for word: once is enough.
    let mut seen = std::collections::HashSet::new();
    let notes = notes
        .0
        .into_iter()
        .filter(|n| seen.insert(n.to_string()))
        .collect();
    Ok(Imported {
        toml: emit::toml(&import),
        notes,
    })
}

/// One file's directives (includes not followed) as crossplane's JSON `parsed` list: how the
/// parser is compared with NGINX's reference parser.
pub fn dump_tree(path: &Path) -> Result<String, TreeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TreeError(format!("cannot read {}: {e}", path.display())))?;
    let shown = path.display().to_string();
    let tree = tree::parse(&text, &shown)?;
    let json: Vec<serde_json::Value> = tree.iter().map(tree::Directive::to_json).collect();
    Ok(serde_json::Value::Array(json).to_string())
}

#[cfg(test)]
mod tests;
