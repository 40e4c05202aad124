//! The serde struct of `[admin]`, as written in the file; [`super::check`] turns it into
//! [`super::AdminSettings`].

use serde::Deserialize;

use crate::config::server::file::CertFile;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
    pub token_file: Option<String>,
    pub public: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub tls: Option<CertFile>,
}
