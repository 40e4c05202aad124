//! Validation of `[server.tls]`: its listeners, the certificates (each loaded and checked, with
//! its key path), `http2`, `min_version` and `reject_unknown_sni`; names covered by two
//! certificates are a warning. A certificate that does not load (expired, no subject alternative
//! name, unreadable, ...) is an error only when no certificate at all is usable; otherwise its
//! problems are warnings, it is left out and the others are served.

use super::file::*;
use crate::config::validate::Checker;
use crate::config::*;
use crate::tls::Certificate;

impl Checker {
    pub(in crate::config) fn server_tls(&mut self, t: ServerTlsFile) -> Option<ServerTls> {
        let (listen, proxy_protocol) = self.listeners("server.tls.listen", t.listen);
        let version = t.min_version.as_deref();
        let min_version = self.choice("server.tls.min_version", version, TlsVersion::V1_2, |n| {
            format!(
                "unknown TLS version {n:?} (expected {})",
                TlsVersion::names()
            )
        });
        let files = t.certificates.unwrap_or_default();
        if files.is_empty() {
            self.problem(
                "server.tls.certificates",
                "at least one certificate is required ({ cert = \"...\", key = \"...\" })",
            );
        }
        // The usable certificates, and their positions in the file (for key paths).
        let (mut certificates, mut indices) = (Vec::new(), Vec::new());
        let (mut skipped, mut errors) = (Vec::new(), Vec::new());
        for (i, f) in files.iter().enumerate() {
            let path = format!("server.tls.certificates[{i}]");
            match self.load_certificate(&path, &f.cert, &f.key) {
                (Some(c), _) => {
                    certificates.push(c);
                    indices.push(i);
                }
                (None, e) => {
                    errors.extend(e);
                    skipped.push(SkippedCert {
                        index: i,
                        cert_path: f.cert.clone().into(),
                        key_path: f.key.clone().into(),
                    });
                }
            }
        }
        if certificates.is_empty() {
            // Nothing to serve: every problem stops lb (and fails a reload).
            self.problems.extend(errors);
        } else {
            for e in errors {
                self.warning(
                    &e.path,
                    format!(
                        "{}; this certificate is not served (the other certificates are)",
                        e.message
                    ),
                );
            }
        }
        self.shadowed_names(&certificates, &indices);
        if listen.is_empty() && !certificates.is_empty() {
            self.warning(
                "server.tls.listen",
                "no TLS listener: the certificates are loaded but not served",
            );
        }
        (!certificates.is_empty()).then_some(ServerTls {
            listen,
            proxy_protocol,
            certificates,
            skipped,
            http2: t.http2.unwrap_or(true),
            min_version,
            reject_unknown_sni: t.reject_unknown_sni.unwrap_or(false),
        })
    }

    /// A name covered by two certificates goes to the first one listed: warned, since the later
    /// certificate never answers for it. `indices[k]`: the position of `certificates[k]` in `server.tls.certificates`.
    fn shadowed_names(&mut self, certificates: &[Certificate], indices: &[usize]) {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (&i, c) in indices.iter().zip(certificates) {
            for name in &c.names {
                let lower = name.as_str();
                match seen.iter().find(|(n, _)| n.eq_ignore_ascii_case(lower)) {
                    Some((_, first)) if *first != i => self.warning(
                        &format!("server.tls.certificates[{i}].cert"),
                        format!(
                            "{name} is also covered by server.tls.certificates[{first}], which is \
                             listed first and is used for it"
                        ),
                    ),
                    Some(_) => {}
                    None => seen.push((lower, i)),
                }
            }
        }
    }
}
