//! What the importer says about the NGINX lines it read: notes on what was not carried over
//! (stderr lines, in the order found), and values tied to the line that set them.

use std::fmt;

use super::tree::Loc;

/// One stderr line: `FILE:LINE: NAME: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub loc: Loc,
    pub name: String,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.loc, self.name, self.message)
    }
}

/// The notes of one import, in the order they were found.
#[derive(Debug, Default)]
pub struct Notes(pub Vec<Note>);

/// The message of a directive lb has no equivalent for.
pub const NOT_SUPPORTED: &str = "not supported, ignored";

impl Notes {
    pub fn add(&mut self, loc: &Loc, name: impl Into<String>, message: impl Into<String>) {
        self.0.push(Note {
            loc: loc.clone(),
            name: name.into(),
            message: message.into(),
        });
    }

    /// `NAME: not supported, ignored`, marked when the directive does not matter to a proxy.
    pub fn unsupported(&mut self, d: &super::tree::Directive) {
        let message = if HARMLESS.contains(&d.name.as_str()) {
            format!("{NOT_SUPPORTED} (no effect on proxying)")
        } else {
            NOT_SUPPORTED.to_string()
        };
        self.add(&d.loc, &d.name, message);
    }
}

/// Directives whose absence changes nothing about what a proxy forwards where.
const HARMLESS: &[&str] = &[
    "access_log",
    "charset",
    "charset_types",
    "daemon",
    "error_log",
    "index",
    "load_module",
    "lock_file",
    "log_format",
    "master_process",
    "open_file_cache",
    "open_file_cache_errors",
    "open_file_cache_min_uses",
    "open_file_cache_valid",
    "pcre_jit",
    "pid",
    "root",
    "sendfile",
    "server_names_hash_bucket_size",
    "server_names_hash_max_size",
    "server_tokens",
    "tcp_nodelay",
    "tcp_nopush",
    "types",
    "types_hash_bucket_size",
    "types_hash_max_size",
    "user",
    "variables_hash_bucket_size",
    "variables_hash_max_size",
    "worker_connections",
    "worker_cpu_affinity",
    "worker_priority",
    "worker_processes",
    "worker_rlimit_nofile",
    "worker_shutdown_timeout",
    "zone",
];

/// A value and the line that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub loc: Loc,
}
