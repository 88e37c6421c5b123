//! A small bounded pool of PostgreSQL connections for [`super::PgMetaStore`], each connection with its
//! own cache of prepared statements, and the TLS set-up of `sslmode`.
//!
//! At most `max` connections exist at once; a caller beyond that waits for one to come back. A
//! connection goes back to the pool only if it is still open; a transaction left unfinished (an early
//! return, a cancelled request) is rolled back by `tokio-postgres` before the connection's next
//! statement, so a pooled connection never carries one. Must never install a process-wide TLS crypto
//! provider (the `ring` provider is passed explicitly) and never log a password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::{MetaError, Result};

/// One open connection: the client, the task driving its socket, and its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<&'static str, Statement>,
    driver: JoinHandle<()>,
}

impl Conn {
    /// The prepared statement for `sql`, prepared on first use on this connection.
    pub(crate) async fn prep(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closing the socket ends the server session, and with it every session-level lock it holds.
        self.driver.abort();
    }
}

/// A connection lent by the pool; it goes back when dropped (unless it was closed).
pub(crate) struct Pooled {
    conn: Option<Conn>,
    idle: Arc<Mutex<Vec<Conn>>>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // Always `Some` until `drop`.
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }
}

/// How connections are encrypted.
#[derive(Clone)]
enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Bounded pool of connections to one database.
pub(crate) struct Pool {
    config: Config,
    tls: Tls,
    idle: Arc<Mutex<Vec<Conn>>>,
    permits: Arc<Semaphore>,
}

/// `sslmode=verify-full` / `verify-ca` are libpq's names; `tokio-postgres` only knows
/// disable / prefer / require, and rejects options it does not know (`sslrootcert`). This takes them out
/// of the URL: returns the URL to hand to `tokio-postgres`, whether TLS must be verified-required, and
/// the extra CA file.
fn split_tls_options(url: &str) -> (String, bool, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), false, None) };
    let mut kept = Vec::new();
    let (mut verify, mut root) = (false, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" if v == "verify-full" || v == "verify-ca" => {
                verify = true;
                kept.push("sslmode=require".to_string());
            }
            "sslrootcert" => root = Some(v.to_string()),
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (url, verify, root)
}

fn rustls_config(extra_ca: Option<&str>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| MetaError::Db(format!("sslrootcert {path}: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| MetaError::Db(format!("sslrootcert {path}: {e}")))?;
        if certs.is_empty() {
            return Err(MetaError::Db(format!("sslrootcert {path}: no certificate in the file")));
        }
        for c in certs {
            roots.add(c).map_err(|e| MetaError::Db(format!("sslrootcert {path}: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MetaError::Db(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Pool {
    /// A pool of at most `max` connections to the database `url` names (a `postgres://` URL or a
    /// `key=value` string). Connects nothing yet.
    pub(crate) fn new(url: &str, max: usize) -> Result<Pool> {
        let (url, verify, root) = split_tls_options(url);
        let mut config: Config = url.parse().map_err(|e| MetaError::Db(format!("invalid database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("entrepot");
        }
        // TLS when asked for (`require`, `verify-ca`, `verify-full`); `prefer` (the default) and `disable`
        // connect in plain text. With TLS the server's certificate is always verified (against the
        // system's roots and `sslrootcert`): a server that cannot be verified is refused, never trusted.
        let tls = if config.get_ssl_mode() == SslMode::Require || verify {
            Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config(root.as_deref())?))
        } else {
            Tls::None
        };
        Ok(Pool { config, tls, idle: Arc::new(Mutex::new(Vec::new())), permits: Arc::new(Semaphore::new(max.max(1))) })
    }

    /// Opens a connection outside the pool's bound (for a session that must stay apart: a lock).
    pub(crate) async fn connect(&self) -> Result<Conn> {
        let (client, driver) = match &self.tls {
            Tls::None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                (client, tokio::spawn(drive(connection)))
            }
            Tls::Rustls(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                (client, tokio::spawn(drive(connection)))
            }
        };
        Ok(Conn { client, statements: HashMap::new(), driver })
    }

    /// A connection, waiting while `max` are lent.
    pub(crate) async fn get(&self) -> Result<Pooled> {
        let permit =
            self.permits.clone().acquire_owned().await.map_err(|_| MetaError::Db("connection pool closed".into()))?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match idle {
                Some(c) if c.client.is_closed() => continue,
                Some(c) => return Ok(Pooled { conn: Some(c), idle: self.idle.clone(), _permit: permit }),
                None => break,
            }
        }
        let conn = self.connect().await?;
        Ok(Pooled { conn: Some(conn), idle: self.idle.clone(), _permit: permit })
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "database connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::split_tls_options;

    #[test]
    fn libpq_tls_options_are_translated() {
        assert_eq!(split_tls_options("postgres://u@h/db"), ("postgres://u@h/db".into(), false, None));
        assert_eq!(
            split_tls_options("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3"),
            ("postgres://u@h/db?sslmode=require&connect_timeout=3".into(), true, Some("/ca.pem".into()))
        );
        assert_eq!(
            split_tls_options("postgres://u@h/db?sslmode=disable"),
            ("postgres://u@h/db?sslmode=disable".into(), false, None)
        );
    }
}
