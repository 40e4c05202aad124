//! `GET /ws`: the WebSocket-style upgrade. Answers 101 and then echoes raw bytes until EOF (no
//! WebSocket framing): enough to test that lb passes upgraded connections through both ways.

use std::io::{self, Write as _};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::head::Request;
use crate::response::{Action, Resp};

const ECHO_CHUNK: usize = 16 * 1024;

/// Writes the 101 (or 426 without the upgrade headers); the loop then calls [`echo`].
pub fn upgrade(rx: &mut Resp, req: &Request) -> Action {
    if !rx.require(req, "GET") {
        return Action::Continue;
    }
    if !req.meta.upgrade_ws {
        let msg = "expected Connection: Upgrade and Upgrade: websocket";
        rx.error(426, "upgrade: websocket\r\n", msg);
        return Action::Continue;
    }
    let name = &rx.st.name;
    let _ = write!(
        rx.out,
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nx-backend: {name}\r\n\r\n"
    );
    Action::Upgrade
}

/// Echoes `early` (bytes that arrived with the upgrade request) and then everything read from
/// `stream` until EOF, then sends FIN.
pub async fn echo<S>(stream: &mut S, early: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(early).await?;
    let mut buf = vec![0; ECHO_CHUNK];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}
