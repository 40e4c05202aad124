//! HTTP/2 (ALPN `h2` over TLS, or cleartext with `--h2c`) and the gRPC services.
//!
//! Plain HTTP requests over HTTP/2 reach the same endpoints as HTTP/1.1 ones: each request is
//! replayed as an HTTP/1.1 request into an in-memory [`Conn`], and its answer is sent back as
//! the HTTP/2 response. So every endpoint, delay included, behaves the same on both protocols
//! (the faults that break HTTP/1 framing on purpose mean nothing on HTTP/2).
//!
//! gRPC calls (`content-type: application/grpc`) go to [`grpc`]: the `lb.LoadTest` service
//! (see `loadtest.proto`) and `grpc.health.v1.Health/Check`, which follows `/healthz` (so
//! `POST /control/health/down` makes it answer `NOT_SERVING`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::conn::Conn;
use crate::response::State;

/// Request bodies replayed into an HTTP/1.1 connection are bounded like a head (the gRPC
/// service streams and needs no bound).
const MAX_BODY: usize = 8 << 20;

/// Serves one HTTP/2 connection: each stream on a task of its own.
pub async fn serve<S>(io: S, st: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((req, respond))) = conn.accept().await {
        let st = Arc::clone(&st);
        tokio::spawn(async move {
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if grpc {
                grpc::call(req, respond, &st).await;
            } else {
                http(req, respond, &st).await;
            }
        });
    }
}

/// An HTTP/2 request answered by the HTTP/1.1 endpoints.
async fn http(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, st: &Arc<State>) {
    let (parts, mut body) = req.into_parts();
    let mut data = BytesMut::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > MAX_BODY {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            return;
        }
    }
    let mut h1 = Vec::with_capacity(256 + data.len());
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    h1.extend_from_slice(format!("{} {target} HTTP/1.1\r\n", parts.method).as_bytes());
    if let Some(a) = parts.uri.authority() {
        h1.extend_from_slice(format!("host: {a}\r\n").as_bytes());
    }
    for (name, value) in &parts.headers {
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            continue;
        }
        h1.extend_from_slice(name.as_str().as_bytes());
        h1.extend_from_slice(b": ");
        h1.extend_from_slice(value.as_bytes());
        h1.extend_from_slice(b"\r\n");
    }
    h1.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            data.len()
        )
        .as_bytes(),
    );
    h1.extend_from_slice(&data);

    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let st2 = Arc::clone(st);
    tokio::spawn(async move { Conn::new(server).run(&st2).await });
    let mut answer = Vec::new();
    let exchanged = async {
        client.write_all(&h1).await?;
        client.read_to_end(&mut answer).await
    };
    if exchanged.await.is_err() {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    }
    match h1_response(&answer) {
        Some((resp, body)) => {
            let end = body.is_empty();
            if let Ok(mut stream) = respond.send_response(resp, end) {
                if !end {
                    let _ = stream.send_data(Bytes::copy_from_slice(body), true);
                }
            }
        }
        None => {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }
}

/// The HTTP/1.1 answer as an HTTP/2 response head and body (`Content-Length` framed, as every
/// endpoint answers; connection-specific fields dropped).
fn h1_response(raw: &[u8]) -> Option<(Response<()>, &[u8])> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = r.parse(raw).ok()? else {
        return None;
    };
    let mut resp = Response::builder().status(r.code?);
    let mut length = None;
    for h in r.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "connection" | "keep-alive" | "transfer-encoding" => continue,
            "content-length" => length = std::str::from_utf8(h.value).ok()?.trim().parse().ok(),
            _ => {}
        }
        resp = resp.header(name, h.value);
    }
    let body = &raw[n..];
    let body = &body[..length.unwrap_or(body.len()).min(body.len())];
    Some((resp.body(()).ok()?, body))
}

/// gRPC over the h2 stream: framing, the `lb.LoadTest` methods and health.
mod grpc {
    use std::sync::atomic::Ordering;

    use lb::util::proto::{put_varint, varint};

    use super::*;

    /// Answers one call; unknown methods get `UNIMPLEMENTED` (12).
    pub async fn call(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, st: &State) {
        let path = req.uri().path().to_string();
        let mut body = req.into_body();
        let head = Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .expect("static head");
        let Ok(mut out) = respond.send_response(head, false) else {
            return;
        };
        let mut messages = Messages::default();
        let status = match path.as_str() {
            "/lb.LoadTest/Process" => match messages.next(&mut body).await {
                Some(m) => {
                    // `--delay` applies, as to `POST /loadTest` (and no `grpc-timeout` is
                    // honoured: the caller's deadline is lb's to enforce).
                    tokio::time::sleep(st.delay).await;
                    let _ = out.send_data(frame(&reply(st, payload(&m))), false);
                    0
                }
                None => 3,
            },
            "/lb.LoadTest/ProcessStream" => match messages.next(&mut body).await {
                Some(m) => {
                    let (count, data) = stream_request(&m);
                    for _ in 0..count.min(10_000) {
                        if out.send_data(frame(&reply(st, data)), false).is_err() {
                            return;
                        }
                    }
                    0
                }
                None => 3,
            },
            "/lb.LoadTest/Chat" => {
                // Every message answered at once: both directions flow together.
                while let Some(m) = messages.next(&mut body).await {
                    if out
                        .send_data(frame(&reply(st, payload(&m))), false)
                        .is_err()
                    {
                        return;
                    }
                }
                0
            }
            "/grpc.health.v1.Health/Check" => {
                let serving = st.healthy.load(Ordering::Relaxed);
                // HealthCheckResponse { status = 1 SERVING | 2 NOT_SERVING }
                let msg = if serving { [0x08, 1] } else { [0x08, 2] };
                let _ = out.send_data(frame(&msg), false);
                0
            }
            _ => 12,
        };
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from(status));
        let _ = out.send_trailers(trailers);
    }

    /// Length-prefixed messages read from a request body.
    #[derive(Default)]
    struct Messages {
        buf: BytesMut,
    }

    impl Messages {
        async fn next(&mut self, body: &mut RecvStream) -> Option<Bytes> {
            loop {
                if self.buf.len() >= 5 {
                    let len = u32::from_be_bytes(self.buf[1..5].try_into().ok()?) as usize;
                    if len > MAX_BODY {
                        return None;
                    }
                    if self.buf.len() >= 5 + len {
                        let mut m = self.buf.split_to(5 + len);
                        return Some(m.split_off(5).freeze());
                    }
                }
                let chunk = body.data().await?.ok()?;
                let _ = body.flow_control().release_capacity(chunk.len());
                self.buf.extend_from_slice(&chunk);
            }
        }
    }

    fn frame(msg: &[u8]) -> Bytes {
        let mut f = Vec::with_capacity(5 + msg.len());
        f.push(0);
        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        f.extend_from_slice(msg);
        Bytes::from(f)
    }

    /// `LoadTestRequest.payload` (field 1, bytes).
    fn payload(m: &[u8]) -> &[u8] {
        fields(m)
            .find(|(n, _)| *n == 1)
            .and_then(|(_, v)| match v {
                Field::Bytes(b) => Some(b),
                Field::Varint(_) => None,
            })
            .unwrap_or_default()
    }

    /// `StreamRequest { uint32 count = 1; bytes payload = 2; }`.
    fn stream_request(m: &[u8]) -> (u64, &[u8]) {
        let (mut count, mut data) = (0, &[][..]);
        for (n, v) in fields(m) {
            match (n, v) {
                (1, Field::Varint(c)) => count = c,
                (2, Field::Bytes(b)) => data = b,
                _ => {}
            }
        }
        (count, data)
    }

    /// `LoadTestReply { string backend = 1; uint64 bytes = 2; string checksum = 3; }`, the
    /// answer of `POST /loadTest` (the checksum is FNV-1a 64 of the payload, 16 hex digits).
    fn reply(st: &State, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        put_bytes(&mut m, 1, st.name.as_bytes());
        m.push(2 << 3);
        put_varint(&mut m, payload.len() as u64);
        let sum = format!("{:016x}", lb::util::hash::fnv1a64(payload));
        put_bytes(&mut m, 3, sum.as_bytes());
        m
    }

    fn put_bytes(m: &mut Vec<u8>, field: u8, b: &[u8]) {
        m.push(field << 3 | 2);
        put_varint(m, b.len() as u64);
        m.extend_from_slice(b);
    }

    enum Field<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
    }

    /// The varint and length-delimited fields of a message (others end the walk).
    fn fields(mut m: &[u8]) -> impl Iterator<Item = (u8, Field<'_>)> {
        std::iter::from_fn(move || {
            let (key, rest) = varint(m)?;
            let (value, rest) = varint(rest)?;
            match key & 7 {
                0 => {
                    m = rest;
                    Some(((key >> 3) as u8, Field::Varint(value)))
                }
                2 => {
                    let b = rest.get(..value as usize)?;
                    m = &rest[value as usize..];
                    Some(((key >> 3) as u8, Field::Bytes(b)))
                }
                _ => None,
            }
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn messages_round_trip() {
            let mut req = Vec::new();
            put_bytes(&mut req, 1, b"hello");
            assert_eq!(payload(&req), b"hello");
            let mut s = vec![1 << 3];
            put_varint(&mut s, 300);
            put_bytes(&mut s, 2, b"xy");
            assert_eq!(stream_request(&s), (300, &b"xy"[..]));
            let st = State::new("b1".into(), std::time::Duration::ZERO);
            let r = reply(&st, b"hello");
            let got: Vec<(u8, Vec<u8>)> = fields(&r)
                .map(|(n, v)| match v {
                    Field::Bytes(b) => (n, b.to_vec()),
                    Field::Varint(x) => (n, x.to_string().into_bytes()),
                })
                .collect();
            assert_eq!(got[0], (1, b"b1".to_vec()));
            assert_eq!(got[1], (2, b"5".to_vec()));
            assert_eq!(got[2].1.len(), 16);
        }
    }
}
