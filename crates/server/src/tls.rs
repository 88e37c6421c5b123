//! HTTPS: a rustls server configuration whose certificate is re-read from its PEM files when they
//! change, so a renewed certificate (certbot, cert-manager, a rotated development certificate) is
//! served without a restart.
//!
//! The files are checked at most once a second, on a handshake. A pair that cannot be loaded (a
//! half-written file, a key that does not match) is logged and the previous certificate stays in use.
//!
//! Must never: serve with no certificate after a good one was loaded, or log key material.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_err = |path: &Path, message: String| TlsError::File { path: path.to_path_buf(), message };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(cert, "no certificate in the file".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, format!("no usable private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(certs, key_der, &provider).map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(ck))
}

struct State {
    key: Arc<CertifiedKey>,
    stamps: (Stamp, Stamp),
    checked: Instant,
}

/// Serves the certificate of two PEM files, reloading them when they change.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: RwLock<State>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub fn new(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let loaded = load(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: RwLock::new(State { key: loaded, stamps, checked: Instant::now() }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let now = Instant::now();
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(s.checked).as_secs() < 1 {
                return s.key.clone();
            }
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(s.checked).as_secs() < 1 {
            return s.key.clone();
        }
        s.checked = now;
        let stamps = (stamp(&self.cert), stamp(&self.key));
        if stamps != s.stamps {
            match load(&self.cert, &self.key) {
                Ok(k) => {
                    tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                    s.key = k;
                    s.stamps = stamps;
                }
                Err(e) => tracing::warn!(error = %e, "cannot reload the TLS certificate; keeping the previous one"),
            }
        }
        s.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS acceptor for `cert` and `key` (PEM), HTTP/1.1 only, TLS 1.2 and 1.3.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let resolver = Arc::new(ReloadingCert::new(cert, key)?);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
