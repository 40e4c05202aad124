//! A certificate chain and its private key, read from PEM files and checked: readable, PEM, the
//! key matches the leaf certificate, the leaf names something in its subject alternative name
//! extension (clients ignore the common name), it is valid now (expired or not yet valid is an
//! error) and not about to expire (within [`EXPIRY_WARNING`]: a warning).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::tls::sign::CertifiedKey;
use pingora_core::tls::{CertificateDer, CryptoProvider, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::util::time::utc_date;

/// A certificate expiring within this long is reported as a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Which of the two files a problem is about (callers turn it into a key path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertPart {
    Cert,
    Key,
}

/// One thing found while loading a certificate; errors make the load fail, warnings do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIssue {
    pub part: CertPart,
    pub message: String,
    pub warning: bool,
}

/// A loaded, checked certificate chain with its signing key, ready for rustls.
#[derive(Clone)]
pub struct Certificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The leaf's subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for Certificate {
    // Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("names", &self.names)
            .field("not_after", &utc_date(self.not_after))
            .finish()
    }
}

/// Same files with the same certificate chain: a certificate renewed in place differs.
impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.key.cert == other.key.cert
    }
}

impl Certificate {
    /// Reads and checks `cert` (PEM chain, leaf first) and `key` (PEM PKCS#8, PKCS#1 or SEC1) at
    /// Unix time `now`. Returns the certificate when nothing is wrong, and every issue found
    /// (warnings included) either way.
    pub fn load(cert: &Path, key_file: &Path, now: i64) -> (Option<Certificate>, Vec<CertIssue>) {
        let mut issues = Vec::new();
        let chain = read_chain(cert).map_err(|m| issues.push(error(CertPart::Cert, m)));
        let signing = read_key(key_file).map_err(|m| issues.push(error(CertPart::Key, m)));
        let (Ok(chain), Ok(signing)) = (chain, signing) else {
            return (None, issues);
        };
        let key = Arc::new(CertifiedKey::new(chain, signing));
        let leaf = match X509Certificate::from_der(&key.cert[0]) {
            Ok((_, leaf)) => leaf,
            Err(e) => {
                let m = format!(
                    "cannot parse the first certificate in {}: {e}",
                    cert.display()
                );
                issues.push(error(CertPart::Cert, m));
                return (None, issues);
            }
        };
        if let Some(spki) = key.key.public_key() {
            if spki.as_ref() != leaf.tbs_certificate.subject_pki.raw {
                let m = format!(
                    "the private key does not match the certificate in {}",
                    cert.display()
                );
                issues.push(error(CertPart::Key, m));
            }
        }
        let names = names(&leaf);
        if names.is_empty() {
            issues.push(error(
                CertPart::Cert,
                "the certificate has no subject alternative name (clients check the names \
                 there, not the common name)"
                    .into(),
            ));
        }
        let validity = leaf.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        issues.extend(validity_issues(not_before, not_after, now));
        let loaded = Certificate {
            cert_path: cert.to_owned(),
            key_path: key_file.to_owned(),
            names,
            not_after,
            key,
        };
        let ok = issues.iter().all(|i| i.warning);
        (ok.then_some(loaded), issues)
    }
}

fn error(part: CertPart, message: String) -> CertIssue {
    CertIssue {
        part,
        message,
        warning: false,
    }
}

/// Expired or not yet valid: errors; expiring within [`EXPIRY_WARNING`]: a warning.
fn validity_issues(not_before: i64, not_after: i64, now: i64) -> Option<CertIssue> {
    let part = CertPart::Cert;
    if not_after < now {
        return Some(error(
            part,
            format!("the certificate expired on {}", utc_date(not_after)),
        ));
    }
    if not_before > now {
        return Some(error(
            part,
            format!(
                "the certificate is not valid before {}",
                utc_date(not_before)
            ),
        ));
    }
    let left = not_after - now;
    (left < EXPIRY_WARNING.as_secs() as i64).then(|| CertIssue {
        part,
        message: format!(
            "the certificate expires on {} (in {} day(s))",
            utc_date(not_after),
            left / 86_400
        ),
        warning: true,
    })
}

/// Certificate authorities a backend's certificate is verified against (`upstreams.X.tls.ca_file`),
/// in the form pingora's connector takes them.
#[derive(Clone)]
pub struct CaCerts {
    pub path: PathBuf,
    ders: Vec<Vec<u8>>,
    pub parsed: Arc<pingora_core::protocols::tls::CaType>,
}

impl fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCerts")
            .field("path", &self.path)
            .field("certificates", &self.ders.len())
            .finish()
    }
}

/// Same file, same certificates.
impl PartialEq for CaCerts {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.ders == other.ders
    }
}

impl CaCerts {
    /// Reads every PEM certificate in `path`; each must parse as X.509.
    pub fn load(path: &Path) -> Result<CaCerts, String> {
        let chain = read_chain(path)?;
        let mut ders = Vec::new();
        for (i, der) in chain.iter().enumerate() {
            if let Err(e) = X509Certificate::from_der(der) {
                return Err(format!(
                    "certificate {} in {} does not parse: {e}",
                    i + 1,
                    path.display()
                ));
            }
            ders.push(der.to_vec());
        }
        let parsed = ders
            .iter()
            .map(|d| {
                pingora_core::utils::tls::WrappedX509::new(
                    d.clone(),
                    pingora_core::utils::tls::parse_x509,
                )
            })
            .collect::<Vec<_>>();
        Ok(CaCerts {
            path: path.to_owned(),
            ders,
            parsed: Arc::from(parsed.into_boxed_slice()),
        })
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "no certificate in {} (expected PEM \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<Arc<dyn pingora_core::tls::sign::SigningKey>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "no private key in {} (expected PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        ),
        e => format!("{} is not a valid PEM private key: {e}", path.display()),
    })?;
    pingora_core::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider installed".to_string())?;
    provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unsupported private key in {}: {e}", path.display()))
}

/// DNS names and IP addresses of the subject alternative name extension.
fn names(leaf: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = leaf.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    /// A certificate for `names` valid from `from` to `until` (Unix seconds), and its key.
    fn make(names: &[&str], from: i64, until: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn dir(tag: &str) -> PathBuf {
        crate::util::testdir::fresh(&format!("cert-{tag}"))
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_good_certificate_loads_with_its_names() {
        let d = dir("good");
        let (c, k) = make(&["admin.example", "127.0.0.1"], NOW - DAY, NOW + 90 * DAY);
        let (cert, issues) =
            Certificate::load(&write(&d, "c.pem", &c), &write(&d, "k.pem", &k), NOW);
        assert_eq!(issues, vec![]);
        let cert = cert.unwrap();
        assert_eq!(cert.names, vec!["admin.example", "127.0.0.1"]);
        assert_eq!(cert.not_after, NOW + 90 * DAY);
        assert!(!format!("{cert:?}").contains("PRIVATE"));
    }

    #[test]
    fn expiry_and_validity_window() {
        let d = dir("expiry");
        let cases = [
            (NOW - 90 * DAY, NOW - DAY, false, "expired on 2027-01-14"),
            (
                NOW + DAY,
                NOW + 90 * DAY,
                false,
                "not valid before 2027-01-16",
            ),
            (
                NOW - DAY,
                NOW + 3 * DAY,
                true,
                "expires on 2027-01-18 (in 3 day(s))",
            ),
        ];
        for (from, until, warning, want) in cases {
            let (c, k) = make(&["a.example"], from, until);
            let (cert, issues) =
                Certificate::load(&write(&d, "c.pem", &c), &write(&d, "k.pem", &k), NOW);
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].part, CertPart::Cert);
            assert_eq!(issues[0].warning, warning);
            assert!(issues[0].message.contains(want), "{issues:?}");
            assert_eq!(
                cert.is_some(),
                warning,
                "a warning still loads, an error does not"
            );
        }
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let d = dir("mismatch");
        let (c, _) = make(&["a.example"], NOW - DAY, NOW + 90 * DAY);
        let (_, other) = make(&["a.example"], NOW - DAY, NOW + 90 * DAY);
        let (cert, issues) =
            Certificate::load(&write(&d, "c.pem", &c), &write(&d, "k.pem", &other), NOW);
        assert!(cert.is_none());
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].part, CertPart::Key);
        assert!(issues[0].message.contains("does not match"), "{issues:?}");
    }

    #[test]
    fn no_subject_alternative_name_is_refused() {
        let d = dir("nosan");
        let (c, k) = make(&[], NOW - DAY, NOW + 90 * DAY);
        let (cert, issues) =
            Certificate::load(&write(&d, "c.pem", &c), &write(&d, "k.pem", &k), NOW);
        assert!(cert.is_none());
        assert!(issues[0].message.contains("no subject alternative name"));
    }

    #[test]
    fn unreadable_and_non_pem_files_name_their_part() {
        let d = dir("files");
        let (c, k) = make(&["a.example"], NOW - DAY, NOW + 90 * DAY);
        let missing = d.join("missing.pem");
        let (cert, issues) = Certificate::load(&missing, &write(&d, "k.pem", &k), NOW);
        assert!(cert.is_none());
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].part, CertPart::Cert);
        assert!(issues[0].message.starts_with("cannot read"), "{issues:?}");

        let (_, issues) = Certificate::load(
            &write(&d, "c.pem", &c),
            &write(&d, "garbage.pem", "not a key\n"),
            NOW,
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].part, CertPart::Key);
        assert!(issues[0].message.contains("no private key"), "{issues:?}");

        // The key where the certificate belongs: both are reported.
        let (_, issues) =
            Certificate::load(&write(&d, "k2.pem", &k), &write(&d, "c2.pem", &c), NOW);
        let parts: Vec<CertPart> = issues.iter().map(|i| i.part).collect();
        assert_eq!(parts, vec![CertPart::Cert, CertPart::Key], "{issues:?}");
    }
}
