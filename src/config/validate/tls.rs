//! Validation of `[server.tls]`: its listeners, the certificates (each loaded and checked, with
//! its key path), `http2` and `min_version`; names covered by two certificates are a warning.

use super::*;
use crate::tls::Certificate;

impl Checker {
    pub(super) fn server_tls(&mut self, t: ServerTlsFile) -> Option<ServerTls> {
        let mut listen = Vec::new();
        for (i, l) in t.listen.iter().enumerate() {
            let path = format!("server.tls.listen[{i}]");
            if let Some(addr) = self.socket_addr(&path, l) {
                self.listener(path, addr);
                listen.push(addr);
            }
        }
        let min_version = match t.min_version.as_deref() {
            None | Some("1.2") => TlsVersion::V1_2,
            Some("1.3") => TlsVersion::V1_3,
            Some(other) => {
                self.problem(
                    "server.tls.min_version",
                    format!("unknown TLS version {other:?} (expected \"1.2\" or \"1.3\")"),
                );
                TlsVersion::V1_2
            }
        };
        let files = t.certificates.unwrap_or_default();
        if files.is_empty() {
            self.problem(
                "server.tls.certificates",
                "at least one certificate is required ({ cert = \"...\", key = \"...\" })",
            );
        }
        let mut certificates = Vec::new();
        let mut ok = true;
        for (i, f) in files.iter().enumerate() {
            let path = format!("server.tls.certificates[{i}]");
            match self.certificate(&path, &f.cert, &f.key) {
                Some(c) => certificates.push(c),
                None => ok = false,
            }
        }
        self.shadowed_names(&certificates);
        if listen.is_empty() && !certificates.is_empty() {
            self.warning(
                "server.tls.listen",
                "no TLS listener: the certificates are loaded but not served",
            );
        }
        (ok && !certificates.is_empty()).then_some(ServerTls {
            listen,
            certificates,
            http2: t.http2.unwrap_or(true),
            min_version,
        })
    }

    /// A name covered by two certificates goes to the first one listed: warned, since the later
    /// certificate never answers for it.
    fn shadowed_names(&mut self, certificates: &[Certificate]) {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (i, c) in certificates.iter().enumerate() {
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
