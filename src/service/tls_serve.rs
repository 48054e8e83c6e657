//! Serving over TLS: a tokio-rustls acceptor in front of tonic (`serve_with_incoming`).
//!
//! The rustls configuration comes from [`crate::security::tls::server_config`] (TLS 1.3, 1.2 by
//! configuration, client certificates none/optional/required, the certificate served by a
//! reloadable [`crate::security::tls::CertStore`]). Each accepted TCP connection is handshaken on its
//! own task (a slow or failed handshake never holds up the others, and is dropped after
//! [`HANDSHAKE_TIMEOUT`]); a finished connection carries [`TlsInfo`] (peer address and the
//! client's leaf certificate) into every request's extensions, where the gate reads it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a TLS connection tells the gate.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The client's leaf certificate (DER), verified against the client CA, if it sent one.
    pub client_cert: Option<Arc<[u8]>>,
}

/// A server-side TLS connection.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: TlsInfo,
}

impl TlsConn {
    /// The peer address and client certificate of the connection.
    pub fn info(&self) -> &TlsInfo {
        &self.info
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TlsInfo;

    fn connect_info(&self) -> TlsInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The stream of handshaken TLS connections accepted on `listener`; runs until the stream
/// is dropped. Handshake failures (a plaintext client, a bad or missing client certificate)
/// are logged at debug level and the connection closed.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel::<io::Result<TlsConn>>(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let client_cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| Arc::<[u8]>::from(c.as_ref()));
                        let conn = TlsConn {
                            stream,
                            info: TlsInfo {
                                peer: Some(peer),
                                client_cert,
                            },
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
