//! Certificate choice by SNI for the HTTPS listeners (`server.tls.certificates`), swappable at
//! run time like [`super::Resolver`]. A name no certificate covers (or no SNI) gets the first
//! certificate, or with `server.tls.reject_unknown_sni` none: rustls then refuses the handshake
//! with an alert, as NGINX's `ssl_reject_handshake` does.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::tls::sign::CertifiedKey;
use pingora_core::tls::{ClientHello, ResolvesServerCert};

use super::Certificate;

/// The certificates of one configuration, with the names each answers for.
#[derive(Debug, Default)]
pub struct CertSet {
    /// (lowercase name from a subject alternative name, index into `keys`), in listing order:
    /// the first certificate covering a name wins.
    names: Vec<(String, usize)>,
    keys: Vec<Arc<CertifiedKey>>,
    /// No default certificate: unknown names and handshakes without SNI get none.
    reject_unknown: bool,
}

impl CertSet {
    /// `reject_unknown`: `server.tls.reject_unknown_sni`.
    pub fn new(certificates: &[Certificate], reject_unknown: bool) -> CertSet {
        let mut set = CertSet {
            reject_unknown,
            ..CertSet::default()
        };
        for (i, c) in certificates.iter().enumerate() {
            set.keys.push(c.key.clone());
            for n in &c.names {
                set.names.push((n.to_ascii_lowercase(), i));
            }
        }
        set
    }

    /// The certificate for `server_name` (the client's SNI): an exact name, else a wildcard
    /// (`*.example.com` covers one label), else the first certificate (also without SNI), or
    /// none when unknown names are rejected.
    pub fn choose(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let chosen = server_name.and_then(|sni| {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            let exact = self.names.iter().find(|(n, _)| *n == sni);
            let parent = sni.split_once('.').map(|(_, rest)| rest);
            let wildcard = || {
                let parent = parent?;
                self.names
                    .iter()
                    .find(|(n, _)| n.strip_prefix("*.") == Some(parent))
            };
            exact.or_else(wildcard).map(|(_, i)| *i)
        });
        match chosen {
            Some(i) => self.keys.get(i),
            None if self.reject_unknown => None,
            None => self.keys.first(),
        }
    }
}

/// rustls asks this for every handshake; a reload stores a new [`CertSet`].
#[derive(Debug, Default)]
pub struct SniResolver {
    set: ArcSwap<CertSet>,
}

impl SniResolver {
    pub fn new(set: CertSet) -> SniResolver {
        SniResolver {
            set: ArcSwap::from_pointee(set),
        }
    }

    /// New handshakes choose from `set`; established connections keep theirs.
    pub fn store(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.set.load().choose(hello.server_name()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tag: u8) -> Arc<CertifiedKey> {
        use pingora_core::tls::{CryptoProvider, PrivateKeyDer};
        pingora_core::tls::install_default_crypto_provider();
        let der = rcgen::KeyPair::generate().unwrap().serialize_der();
        let signing = CryptoProvider::get_default()
            .unwrap()
            .key_provider
            .load_private_key(PrivateKeyDer::try_from(der).unwrap())
            .unwrap();
        Arc::new(CertifiedKey::new(vec![vec![tag].into()], signing))
    }

    fn set(entries: &[&[&str]]) -> CertSet {
        let mut s = CertSet::default();
        for (i, names) in entries.iter().enumerate() {
            s.keys.push(key(i as u8));
            for n in *names {
                s.names.push((n.to_string(), i));
            }
        }
        s
    }

    fn chosen(s: &CertSet, sni: Option<&str>) -> u8 {
        s.choose(sni).unwrap().cert[0].as_ref()[0]
    }

    #[test]
    fn exact_then_wildcard_then_first() {
        let s = set(&[
            &["api.example.com"],
            &["*.example.com", "admin.test"],
            &["api.example.com"],
        ]);
        assert_eq!(chosen(&s, Some("API.example.com.")), 0);
        assert_eq!(chosen(&s, Some("www.example.com")), 1);
        assert_eq!(chosen(&s, Some("admin.test")), 1);
        // A wildcard covers one label only; unknown names and no SNI get the first.
        assert_eq!(chosen(&s, Some("a.b.example.com")), 0);
        assert_eq!(chosen(&s, Some("other.test")), 0);
        assert_eq!(chosen(&s, None), 0);
    }

    #[test]
    fn unknown_names_get_nothing_when_rejected() {
        let mut s = set(&[&["api.example.com"], &["*.example.com"]]);
        s.reject_unknown = true;
        assert_eq!(chosen(&s, Some("api.example.com")), 0);
        assert_eq!(chosen(&s, Some("www.example.com")), 1);
        assert!(s.choose(Some("other.test")).is_none());
        assert!(s.choose(Some("a.b.example.com")).is_none());
        assert!(s.choose(None).is_none());
    }
}
