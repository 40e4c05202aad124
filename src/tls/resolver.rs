//! The certificate rustls presents, swappable at run time.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use pingora_core::tls::sign::CertifiedKey;
use pingora_core::tls::{ClientHello, ResolvesServerCert};

/// Answers every handshake with the certificate stored last. Holding no certificate fails the
/// handshake (rustls sends an alert), which only happens if a listener was started without one.
#[derive(Debug, Default)]
pub struct Resolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl Resolver {
    pub fn new(cert: Option<Arc<CertifiedKey>>) -> Resolver {
        Resolver {
            current: ArcSwapOption::new(cert),
        }
    }

    /// New handshakes get `cert`; handshakes already done keep theirs.
    pub fn store(&self, cert: Option<Arc<CertifiedKey>>) {
        self.current.store(cert);
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}
