//! `ssl_certificate` / `ssl_certificate_key`, `http2 on` and legacy `ssl on`: a server's TLS
//! lines, inherited from the `http` level, and the certificates they name.

use std::path::Path;

use crate::import::model::*;
use crate::import::tree::{Directive, Loc};

/// `ssl_certificate` / `ssl_certificate_key` lines and `http2 on`, inherited from `http`.
#[derive(Default, Clone)]
pub(super) struct TlsFiles {
    certs: Vec<At<String>>,
    keys: Vec<At<String>>,
    pub(super) http2: Option<Loc>,
    /// Legacy `ssl on;`.
    pub(super) ssl_on: Option<Loc>,
}

impl TlsFiles {
    pub(super) fn owns(name: &str) -> bool {
        matches!(
            name,
            "ssl_certificate" | "ssl_certificate_key" | "http2" | "ssl"
        )
    }

    /// Takes `d` if it is one of ours; `false` otherwise.
    pub(super) fn take(&mut self, d: &Directive) -> bool {
        let value = At {
            value: d.args.first().cloned().unwrap_or_default(),
            loc: d.loc.clone(),
        };
        match d.name.as_str() {
            "ssl_certificate" => self.certs.push(value),
            "ssl_certificate_key" => self.keys.push(value),
            "http2" => self.http2 = (value.value == "on").then_some(d.loc.clone()),
            "ssl" => self.ssl_on = (value.value == "on").then_some(d.loc.clone()),
            _ => return false,
        }
        true
    }

    /// A server's own lines, else the inherited ones (as NGINX merges arrays).
    pub(super) fn or(self, http: &TlsFiles) -> TlsFiles {
        TlsFiles {
            certs: if self.certs.is_empty() {
                http.certs.clone()
            } else {
                self.certs
            },
            keys: if self.keys.is_empty() {
                http.keys.clone()
            } else {
                self.keys
            },
            http2: self.http2.or_else(|| http.http2.clone()),
            ssl_on: self.ssl_on.or_else(|| http.ssl_on.clone()),
        }
    }

    pub(super) fn certificates(&self, conf_dir: &Path, notes: &mut Notes) -> Vec<Certificate> {
        let mut out = Vec::new();
        for (i, c) in self.certs.iter().enumerate() {
            let Some(k) = self.keys.get(i) else {
                notes.add(
                    &c.loc,
                    "ssl_certificate",
                    "no matching ssl_certificate_key, skipped",
                );
                continue;
            };
            if c.value.contains('$') || k.value.contains('$') || c.value.starts_with("data:") {
                let msg = "variables and data: certificates are not supported, skipped";
                notes.add(&c.loc, "ssl_certificate", msg);
                continue;
            }
            let full = |p: &str| conf_dir.join(p).display().to_string();
            out.push(Certificate {
                cert: full(&c.value),
                key: full(&k.value),
                loc: c.loc.clone(),
            });
        }
        out
    }
}
