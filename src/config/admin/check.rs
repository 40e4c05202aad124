//! Validation of `[admin]`: the listener, the bearer token file, public paths, the client
//! allow-list and `[admin.tls]`, each problem (and warning) with its key path.

use std::path::Path;

use super::file::*;
use crate::config::validate::{join, parse_cidr, Checker};
use crate::config::*;
use crate::tls::{CertPart, Certificate};

/// The admin listener's endpoints (kept in step with [`crate::admin`]'s routes; `--check` warns
/// about a `public` entry outside this list, which can only be a typo).
pub const ADMIN_PATHS: &[&str] = &[
    "/",
    "/dashboard",
    "/healthz",
    "/metrics",
    "/status",
    "/reload",
    "/history",
    "/history.csv",
    "/report",
];

/// A token shorter than this is a warning: it is guessable.
const SHORT_TOKEN: usize = 16;

impl Checker {
    pub(in crate::config) fn admin(&mut self, a: AdminFile) -> Option<AdminSettings> {
        let listen = self.socket_addr("admin.listen", &a.listen)?;
        self.listener("admin.listen".into(), listen);
        let token = a.token_file.as_deref().and_then(|f| self.token_file(f));
        if a.token_file.is_none() && !listen.ip().is_loopback() {
            self.warning(
                "admin.listen",
                format!(
                    "{listen} is not a loopback address and admin.token_file is not set: anyone \
                     who can reach it can read /status and /metrics and trigger reloads"
                ),
            );
        }
        let public = self.public_paths(a.public);
        let allow = self.allow(a.allow);
        let hosts = self.admin_hosts(a.hosts);
        let tls = a
            .tls
            .and_then(|t| self.certificate("admin.tls", &t.cert, &t.key));
        Some(AdminSettings {
            listen,
            token,
            public,
            allow,
            hosts,
            tls,
        })
    }

    /// `admin.hosts`: the names (besides IP literals and `localhost`) a client may call the
    /// admin listener by when it has no token, in lower case.
    fn admin_hosts(&mut self, value: Option<Vec<String>>) -> Vec<String> {
        let mut out = Vec::new();
        for (i, h) in value.unwrap_or_default().into_iter().enumerate() {
            let valid =
                !h.is_empty() && !h.contains(':') && crate::util::host::is_valid_host(h.as_bytes());
            if valid {
                out.push(h.trim_end_matches('.').to_ascii_lowercase());
            } else {
                self.problem(
                    format!("admin.hosts[{i}]"),
                    format!("{h:?} must be a host name without port (e.g. \"lb.internal\")"),
                );
            }
        }
        out
    }

    fn token_file(&mut self, file: &str) -> Option<AdminToken> {
        let key = "admin.token_file";
        if file.is_empty() {
            self.problem(key, "must be a file path");
            return None;
        }
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                self.problem(key, format!("cannot read {file:?}: {e}"));
                return None;
            }
        };
        let token = text.trim();
        if token.is_empty() {
            self.problem(
                key,
                format!("{file:?} is empty (write the token into it, on one line)"),
            );
            return None;
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(
                key,
                format!(
                    "the token in {file:?} must be printable ASCII without spaces (clients send \
                     it in an HTTP header)"
                ),
            );
            return None;
        }
        if token.len() < SHORT_TOKEN {
            self.warning(
                key,
                format!(
                    "the token in {file:?} has only {} characters; use at least 32 random ones \
                     (e.g. `head -c 32 /dev/urandom | base64`)",
                    token.len()
                ),
            );
        }
        if let Some(mode) = world_readable(Path::new(file)) {
            self.warning(
                key,
                format!("{file:?} is readable by every user (mode {mode:o}); chmod o-r it"),
            );
        }
        Some(AdminToken::new(file.into(), token.to_string()))
    }

    fn public_paths(&mut self, value: Option<Vec<String>>) -> Vec<String> {
        let Some(paths) = value else {
            return DEFAULT_ADMIN_PUBLIC.iter().map(|p| p.to_string()).collect();
        };
        let mut out = Vec::new();
        for (i, p) in paths.into_iter().enumerate() {
            let key = format!("admin.public[{i}]");
            if !p.starts_with('/') {
                self.problem(
                    key,
                    format!("{p:?} must be an absolute path starting with '/' (e.g. \"/metrics\")"),
                );
                continue;
            }
            if !ADMIN_PATHS.contains(&p.as_str()) {
                self.warning(
                    &key,
                    format!(
                        "{p:?} is not an admin endpoint (they are {})",
                        ADMIN_PATHS.join(", ")
                    ),
                );
            }
            if p == "/reload" {
                self.warning(
                    &key,
                    "\"/reload\" is public: anyone who can reach the admin listener can reload",
                );
            }
            out.push(p);
        }
        out
    }

    fn allow(&mut self, value: Option<Vec<String>>) -> Option<Vec<Cidr>> {
        let nets = value?;
        if nets.is_empty() {
            self.problem(
                "admin.allow",
                "must list at least one network (leave it out to allow any client)",
            );
        }
        let mut out = Vec::new();
        for (i, n) in nets.iter().enumerate() {
            match parse_cidr(n) {
                Ok(c) => out.push(c),
                Err(m) => self.problem(format!("admin.allow[{i}]"), m),
            }
        }
        Some(out)
    }

    /// Loads `cert`/`key` for the table at `path`, reporting problems at `PATH.cert`/`PATH.key`.
    pub(in crate::config) fn certificate(
        &mut self,
        path: &str,
        cert: &str,
        key: &str,
    ) -> Option<Certificate> {
        let (loaded, errors) = self.load_certificate(path, cert, key);
        self.problems.extend(errors);
        loaded
    }

    /// Loads `cert`/`key` for the table at `path`: reports its warnings at `PATH.cert`/`PATH.key`
    /// and returns its errors (the certificate is `None` when there are any), for the caller to
    /// report as problems or, when other certificates can serve, as warnings.
    pub(in crate::config) fn load_certificate(
        &mut self,
        path: &str,
        cert: &str,
        key: &str,
    ) -> (Option<Certificate>, Vec<Problem>) {
        let now = crate::util::time::unix_ms() as i64 / 1000;
        let (loaded, issues) = Certificate::load(Path::new(cert), Path::new(key), now);
        let mut errors = Vec::new();
        for issue in issues {
            let at = match issue.part {
                CertPart::Cert => join(path, "cert"),
                CertPart::Key => join(path, "key"),
            };
            if issue.warning {
                self.warning(&at, issue.message);
            } else {
                errors.push(Problem {
                    path: at,
                    message: issue.message,
                });
            }
        }
        if let Some(mode) = group_or_world_readable(Path::new(key)) {
            self.warning(
                &join(path, "key"),
                format!("{key:?} is readable by other users (mode {mode:o}); chmod go-r it"),
            );
        }
        (loaded, errors)
    }
}

/// The file's permission bits when users other than its owner may read it.
fn group_or_world_readable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// The file's permission bits when every user may read it.
fn world_readable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o004 != 0).then_some(mode)
}
