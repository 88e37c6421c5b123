//! Accepting connections and serving HTTP/1.1 on them.
//!
//! Each connection gets TCP_NODELAY and a header read timeout. A plain-HTTP port that receives a TLS
//! ClientHello answers `400 Bad Request` in plain HTTP instead of dropping the connection: that answer
//! is what makes the docker CLI fall back from HTTPS to HTTP for an insecure registry. With a TLS
//! acceptor, every connection is HTTPS (see [`crate::tls`]).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new connection may stay silent before its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long in-flight requests may run on after a shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const TLS_ON_PLAIN_PORT: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 48\r\n\r\nClient sent an HTTPS request to an HTTP server.\n";

/// Serves `app` over plain HTTP on `listener` until `shutdown` completes, then drains in-flight
/// connections.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    serve_with(listener, app, None, shutdown).await
}

/// Serves `app` on `listener`, over HTTPS when `tls` is given, until `shutdown` completes, then drains
/// in-flight connections.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let info = crate::auth::ConnInfo { peer, tls: tls.is_some() };
            let app = tower::ServiceExt::map_request(app, move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info);
                req
            });
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
                b
            };
            let result = match tls {
                None => {
                    let Some(stream) = starts_with_http(stream).await else { return };
                    watcher.watch(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(FIRST_BYTE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    watcher.watch(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after the drain timeout"),
    }
}

/// Waits for the first byte; answers a TLS handshake with a plain 400 and returns `None` for it (and
/// for a connection that closes or stays silent).
async fn starts_with_http(mut stream: TcpStream) -> Option<TcpStream> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {
            if stream.write_all(TLS_ON_PLAIN_PORT).await.is_ok() && stream.shutdown().await.is_ok() {
                // Read what the client sent before closing: closing with unread bytes makes the kernel
                // send a reset, which can destroy the answer before the client reads it.
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            None
        }
        Ok(Ok(1)) => Some(stream),
        _ => None,
    }
}
