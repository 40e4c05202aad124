//! TLS certificates, shared by every listener that serves HTTPS (the proxy's `[server.tls]`
//! listeners and the admin listener).
//!
//! [`cert`] reads a PEM certificate chain and its private key and checks them the way `--check`
//! reports them (readable, PEM, key matches the certificate, a subject alternative name, not
//! expired; expiring soon is a warning). [`resolver`] hands the loaded certificate to rustls for
//! each handshake from an `ArcSwap`, so a reload changes the certificate of new handshakes without
//! touching the listener or established connections (pingora has no certificate reload of its own,
//! and with rustls its certificate callback is never called: a resolver is the way in). [`sni`]
//! does the same for a set of certificates, choosing one per handshake by the client's SNI.

pub mod cert;
pub mod resolver;
pub mod sni;

pub use cert::{CaCerts, CertIssue, CertPart, Certificate, EXPIRY_WARNING};
pub use resolver::Resolver;
pub use sni::{CertSet, SniResolver};
