//! `[admin]`: the admin listener's address, token, public paths, client networks, host names
//! and TLS — the runtime types, their defaults and the `lb --check` line.
//!
//! The file structs (serde, as written) are in `file`, the checks that turn them into these
//! types in `check`, on the shared machinery of `config::validate`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

mod check;
pub(in crate::config) mod file;

pub use check::ADMIN_PATHS;

use super::Cidr;

/// Default `admin.public`: the paths the admin listener serves without the token.
pub const DEFAULT_ADMIN_PUBLIC: &[&str] = &["/healthz"];

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// `admin.token_file`, read when the config is loaded (so a reload rotates it).
    pub token: Option<AdminToken>,
    /// Paths served without the token.
    pub public: Vec<String>,
    /// Client networks allowed at all; `None`: any client.
    pub allow: Option<Vec<Cidr>>,
    /// `admin.hosts`: names a client without a token may send in `Host` (IP literals and
    /// `localhost` always pass), lower case. Other names are refused: DNS rebinding.
    pub hosts: Vec<String>,
    /// `[admin.tls]`: serve the admin listener over HTTPS with this certificate.
    pub tls: Option<crate::tls::Certificate>,
}

/// The admin bearer token and the file it was read from.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub file: PathBuf,
    secret: String,
}

impl AdminToken {
    pub fn new(file: PathBuf, secret: String) -> AdminToken {
        AdminToken { file, secret }
    }

    /// The token itself: compare it in constant time, never log it.
    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminToken({}, <redacted>)", self.file.display())
    }
}

impl AdminSettings {
    /// One line for `lb --check`: address, scheme and what protects it.
    pub fn summary(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let token = match &self.token {
            Some(t) => format!("token from {}", t.file.display()),
            None => "no token".to_string(),
        };
        let allow = match &self.allow {
            Some(nets) => {
                let nets: Vec<String> = nets.iter().map(Cidr::to_string).collect();
                format!("allow {}", nets.join(", "))
            }
            None => "any client".to_string(),
        };
        format!(
            "{scheme}://{} ({token}, public {}, {allow})",
            self.listen,
            self.public.join(" ")
        )
    }
}
