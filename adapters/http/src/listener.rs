//! The listening socket's accepted connections, with Nagle's algorithm off.
//!
//! poem accepts plain `TcpStream`s with the kernel's defaults. A WebSocket writes small frames
//! as they happen; with Nagle on, a frame written while the previous one is unacknowledged
//! waits for that ACK, which the client may delay by 40 ms — the write-heavy p99 was exactly
//! that. Every WebSocket server sets `TCP_NODELAY`; banter batches its own writes instead
//! (several frames per write while the socket is busy).

use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio::net::TcpStream;

/// A [`TcpAcceptor`] whose connections have `TCP_NODELAY` set.
pub struct NoDelayAcceptor(TcpAcceptor);

impl std::fmt::Debug for NoDelayAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NoDelayAcceptor")
            .field(&self.0.local_addr())
            .finish()
    }
}

impl NoDelayAcceptor {
    pub fn new(inner: TcpAcceptor) -> Self {
        Self(inner)
    }
}

impl Acceptor for NoDelayAcceptor {
    type Io = TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(TcpStream, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, local, remote, scheme) = self.0.accept().await?;
        if let Err(e) = stream.set_nodelay(true) {
            // The connection still works, only with Nagle's delays.
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        Ok((stream, local, remote, scheme))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::listener::{Listener, TcpListener};

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let inner = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("a free port");
        let mut acceptor = NoDelayAcceptor::new(inner);
        let address = acceptor.local_addr()[0]
            .as_socket_addr()
            .copied()
            .expect("a TCP address");
        let client = tokio::spawn(TcpStream::connect(address));
        let (stream, ..) = acceptor.accept().await.expect("a connection");
        assert!(stream.nodelay().expect("readable option"));
        drop(client.await);
    }
}
