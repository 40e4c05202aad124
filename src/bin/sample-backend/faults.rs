//! `/fault/*`: deliberately broken responses (truncated bodies, garbage, silent close) for
//! testing how lb handles a misbehaving upstream. `/fault/sleep/{ms}` is routed with `/delay/`.

use crate::response::{Action, Resp};

/// Writes the broken bytes `kind` names; the connection is then closed (FIN).
pub fn fault(rx: &mut Resp, kind: &str) -> Action {
    let head = format!(
        "HTTP/1.1 200 OK\r\nx-backend: {}\r\ncontent-type: text/plain\r\n",
        rx.st.name
    );
    let bytes = match kind {
        "close-mid-body" => head + "content-length: 1000\r\n\r\n0123456789",
        "close-mid-chunked" => head + "transfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        "garbage" => "this is not http\r\n\r\n".to_string(),
        "close" => String::new(),
        _ => {
            rx.error(404, "", "unknown fault");
            return Action::Continue;
        }
    };
    rx.out.extend_from_slice(bytes.as_bytes());
    Action::Close
}
