//! The listener: binds, prints the ready line, accepts TCP connections and spawns a [`Conn`] per
//! socket until SIGTERM or SIGINT. With TLS the accepted stream is wrapped (handshake on the
//! connection's own task) and handed to the same connection loop.

use std::io::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::tls::TlsAcceptor;
use tokio::net::TcpListener;

use crate::conn::Conn;
use crate::h2srv;
use crate::response::State;

/// Binds `listen`, prints the ready line tests wait for, and serves until SIGTERM or SIGINT.
/// What a connection speaks.
#[derive(Clone)]
pub enum Transport {
    /// HTTP/1.1.
    Plain,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
    /// TLS, then HTTP/2 or HTTP/1.1 by ALPN.
    Tls(TlsAcceptor),
}

pub async fn run(listen: &str, state: State, transport: Transport) -> io::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(state);
    println!("sample-backend {} listening on {addr}", state.name);
    io::stdout().flush()?;
    tokio::select! {
        res = accept_loop(listener, state, transport) => res,
        res = shutdown_signal() => res,
    }
}

async fn shutdown_signal() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    transport: Transport,
) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let transport = transport.clone();
                tokio::spawn(async move {
                    match transport {
                        Transport::Plain => {
                            let _ = Conn::new(stream).run(&state).await;
                        }
                        Transport::H2c => h2srv::serve(stream, state).await,
                        Transport::Tls(tls) => {
                            // A failed handshake has nothing to answer.
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                h2srv::serve(stream, state).await;
                            } else {
                                let _ = Conn::new(stream).run(&state).await;
                            }
                        }
                    }
                });
            }
            Err(e) => {
                // Typically EMFILE under overload: back off instead of spinning.
                eprintln!("sample-backend: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
