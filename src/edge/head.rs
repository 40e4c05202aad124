//! Request-head checks, pure: [`check_head`] validates a parsed head (framing, syntax, `Host`,
//! limits) and `HeadScan` follows a head as it arrives, byte-exact with pingora's parser on
//! where it ends.

use crate::config::Limits;
pub use crate::util::host::is_valid_host;

/// Why lb refuses a request: the status it answers with and a short reason for the body and log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

pub(super) const fn reject(status: u16, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// What [`check_head`] learnt about an accepted request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadInfo {
    pub http10: bool,
    /// The single valid `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` (the only transfer coding lb accepts).
    pub chunked: bool,
    /// An `Upgrade` header is present.
    pub upgrade: bool,
}

/// The checks of [`check_head`] that apply to an HTTP/2 request, whose framing and syntax the
/// HTTP/2 layer has checked already (and whose header list it bounds by
/// `server.max_header_bytes`): target length, field count, a `Content-Length` within
/// `max_body_bytes`. A body without a length is counted as it arrives (`chunked` in the answer).
pub fn check_h2_head(
    path_and_query: &str,
    authority: Option<&[u8]>,
    headers: &http::HeaderMap,
    limits: &Limits,
) -> std::result::Result<HeadInfo, Reject> {
    if path_and_query.len() > limits.max_uri_bytes {
        return Err(reject(
            414,
            "request target longer than server.max_uri_bytes",
        ));
    }
    if headers.len() > limits.max_headers {
        return Err(reject(431, "more header fields than server.max_headers"));
    }
    let hosts = headers
        .get_all(http::header::HOST)
        .iter()
        .map(|h| h.as_bytes());
    if !authority.into_iter().chain(hosts).all(is_valid_host) {
        return Err(reject(400, "invalid Host"));
    }
    let mut info = HeadInfo::default();
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => info.chunked = true,
        (Some(v), None) => {
            let n = std::str::from_utf8(v.as_bytes())
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or(reject(400, "invalid Content-Length"))?;
            if n > limits.max_body_bytes_any_route {
                return Err(reject(
                    413,
                    "request body larger than server.max_body_bytes",
                ));
            }
            info.content_length = Some(n);
        }
        (Some(_), Some(_)) => return Err(reject(400, "more than one Content-Length")),
    }
    Ok(info)
}

/// Transfer codings lb knows (and refuses with 400 unless the value is exactly `chunked`);
/// anything else is an unknown coding (501), as NGINX does.
pub(super) const KNOWN_CODINGS: &[&str] = &[
    "chunked",
    "gzip",
    "x-gzip",
    "deflate",
    "compress",
    "x-compress",
    "identity",
];

/// `tchar` (RFC 9110 §5.6.2) by table: this runs over every header name of every request.
pub(super) static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token such as a header name or method.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Field-value bytes: HTAB, visible ASCII, SP and obs-text. No other control characters (CR, LF,
/// NUL, DEL, ...). Branch-free so that it vectorises: it runs over every header value.
pub fn is_field_value(v: &[u8]) -> bool {
    v.iter().fold(true, |ok, &b| {
        ok & (((b >= 0x20) & (b != 0x7f)) | (b == b'\t'))
    })
}

/// `v` without optional whitespace (SP, HTAB) at either end.
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Validates one raw HTTP/1 request head (request line, header lines and the terminating empty
/// line, as received) against lb's rules and `limits`. Stricter than pingora's parser:
///
/// - request target longer than `max_uri_bytes` → 414; head longer than `max_header_bytes` or more
///   than `max_headers` header fields → 431;
/// - malformed request line, header name (not a token, space before the colon, empty), header value
///   with a control character, obs-fold continuation line → 400;
/// - HTTP/1.1 without exactly one `Host`, HTTP/1.0 with several → 400;
/// - more than one `Content-Length` (even identical), or one that is not plain digits → 400;
/// - `Transfer-Encoding` with `Content-Length`, on HTTP/1.0, on several lines, or other than a
///   single `chunked` → 400 (501 when it names an unknown coding);
/// - `Content-Length` above `max_body_bytes` → 413.
///
/// Never panics, whatever the bytes.
pub fn check_head(raw: &[u8], limits: &Limits) -> std::result::Result<HeadInfo, Reject> {
    let (http10, mut rest) = request_line(raw, limits)?;
    let mut fields = Fields::default();
    // One pass per header line: name (tchars up to the colon), then the value's bytes.
    loop {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(reject(400, "incomplete request head"));
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(reject(400, "obsolete header line folding"));
        }
        fields.count += 1;
        if fields.count > limits.max_headers {
            return Err(reject(431, "more header fields than server.max_headers"));
        }
        fields.line(line)?;
    }
    fields.framing(http10, limits)
}

/// Checks the request line (method SP request-target SP HTTP-version, after any empty lines,
/// which RFC 9112 §2.2 and pingora ignore) and the head's size; returns whether it is HTTP/1.0,
/// and the header lines after it.
fn request_line<'a>(
    raw: &'a [u8],
    limits: &Limits,
) -> std::result::Result<(bool, &'a [u8]), Reject> {
    let start = raw
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(raw.len());
    // The request line, and the rest of the head after its LF (nothing when it has none).
    let head = &raw[start..];
    let (line, rest) = match head.iter().position(|&b| b == b'\n') {
        Some(p) => (&head[..p], &head[p + 1..]),
        None => (head, &[][..]),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if target.is_some_and(|t| t.len() > limits.max_uri_bytes) {
        return Err(reject(
            414,
            "request target longer than server.max_uri_bytes",
        ));
    }
    if raw.len() > limits.max_header_bytes {
        return Err(reject(
            431,
            "request head larger than server.max_header_bytes",
        ));
    }
    let (Some(method), Some(target), Some(version), None) = (method, target, version, parts.next())
    else {
        return Err(reject(400, "malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(reject(400, "malformed request line: method"));
    }
    if target.is_empty() || !target.iter().all(|&b| b > 0x20 && b != 0x7f) {
        return Err(reject(400, "malformed request line: target"));
    }
    match version {
        b"HTTP/1.1" => Ok((false, rest)),
        b"HTTP/1.0" => Ok((true, rest)),
        _ => Err(reject(400, "malformed request line: version")),
    }
}

/// What the header lines of a head said so far, for the framing rules at its end.
#[derive(Default)]
struct Fields {
    count: usize,
    hosts: u32,
    content_lengths: u32,
    /// `Transfer-Encoding` lines.
    tes: u32,
    te_unknown: bool,
    /// Every `Transfer-Encoding` line was exactly `chunked` (checked with `tes == 1`).
    te_not_chunked: bool,
    content_length: Option<u64>,
    upgrade: bool,
}

impl Fields {
    /// One header line (not empty, not folded, without its line end): its syntax, and what it
    /// says about the framing.
    fn line(&mut self, line: &[u8]) -> std::result::Result<(), Reject> {
        let colon = line
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(line.len());
        if colon == line.len() {
            return Err(reject(400, "header line without a colon"));
        }
        if colon == 0 || line[colon] != b':' {
            return Err(reject(400, "invalid header name"));
        }
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_field_value(value) {
            return Err(reject(400, "invalid character in header value"));
        }
        let value = trim_ows(value);
        if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
            if !is_valid_host(value) {
                return Err(reject(400, "invalid Host"));
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            self.content_lengths += 1;
            let digits =
                !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit);
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|_| digits)
                .and_then(|s| s.parse::<u64>().ok());
            match n {
                Some(n) => self.content_length = Some(n),
                None => return Err(reject(400, "invalid Content-Length")),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.tes += 1;
            let mut n = 0;
            for coding in value.split(|&b| b == b',').map(trim_ows) {
                n += 1;
                let known = KNOWN_CODINGS
                    .iter()
                    .any(|k| coding.eq_ignore_ascii_case(k.as_bytes()));
                self.te_unknown |= !known;
                self.te_not_chunked |= !coding.eq_ignore_ascii_case(b"chunked");
            }
            self.te_not_chunked |= n != 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
        Ok(())
    }

    /// The rules on `Host`, `Content-Length` and `Transfer-Encoding` once every line was read.
    fn framing(self, http10: bool, limits: &Limits) -> std::result::Result<HeadInfo, Reject> {
        match (http10, self.hosts) {
            (false, 1) | (true, 0 | 1) => {}
            (false, 0) => return Err(reject(400, "HTTP/1.1 request without Host")),
            _ => return Err(reject(400, "several Host headers")),
        }
        if self.content_lengths > 1 {
            return Err(reject(400, "several Content-Length headers"));
        }
        if self.tes > 0 {
            if http10 {
                return Err(reject(400, "Transfer-Encoding on an HTTP/1.0 request"));
            }
            if self.content_lengths > 0 {
                return Err(reject(400, "both Content-Length and Transfer-Encoding"));
            }
            if self.te_unknown {
                return Err(reject(501, "unknown transfer coding"));
            }
            if self.tes > 1 || self.te_not_chunked {
                return Err(reject(400, "Transfer-Encoding must be exactly \"chunked\""));
            }
        }
        if self
            .content_length
            .is_some_and(|n| n > limits.max_body_bytes_any_route)
        {
            return Err(reject(
                413,
                "request body larger than server.max_body_bytes",
            ));
        }
        Ok(HeadInfo {
            http10,
            content_length: self.content_length,
            chunked: self.tes > 0,
            upgrade: self.upgrade,
        })
    }
}

/// Incremental scan of a request head as it arrives: its size, the request target's length, the
/// number of header lines, and where the head ends (an empty line, CRLF or bare LF, as pingora's
/// parser accepts).
#[derive(Debug, Default)]
pub(super) struct HeadScan {
    total: usize,
    started: bool,
    line1_done: bool,
    spaces: u8,
    target: usize,
    fields: usize,
    lf: bool,
    lf_cr: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    More,
    Done,
    Refuse(u16),
}

impl HeadScan {
    pub(super) fn feed(&mut self, bytes: &[u8], l: &Limits) -> Scan {
        // Only the bytes that still fit in max_header_bytes are scanned: a head that does not end
        // within them is too large.
        let budget = l.max_header_bytes.saturating_sub(self.total);
        let b = &bytes[..bytes.len().min(budget)];
        let mut i = 0;
        if !self.started {
            while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
                i += 1;
            }
            self.started = i < b.len();
        }
        // Request line: count the target (between the first and second space).
        while self.started && !self.line1_done && i < b.len() {
            match b[i..].iter().position(|&c| c == b' ' || c == b'\n') {
                None => {
                    if self.spaces == 1 {
                        self.target += b.len() - i;
                    }
                    i = b.len();
                }
                Some(p) => {
                    if self.spaces == 1 {
                        self.target += p;
                    }
                    if b[i + p] == b'\n' {
                        self.line1_done = true;
                        self.lf = true;
                    } else {
                        self.spaces = self.spaces.saturating_add(1);
                    }
                    i += p + 1;
                }
            }
            if self.target > l.max_uri_bytes {
                return Scan::Refuse(414);
            }
        }
        // Header lines, until an empty one (LF or CRLF right after a LF).
        while self.line1_done && i < b.len() {
            if self.lf {
                match b[i] {
                    b'\n' => return Scan::Done,
                    b'\r' if !self.lf_cr => {
                        self.lf_cr = true;
                        i += 1;
                        continue;
                    }
                    _ => {
                        self.lf = false;
                        self.lf_cr = false;
                    }
                }
            }
            match b[i..].iter().position(|&c| c == b'\n') {
                Some(p) => {
                    i += p + 1;
                    self.lf = true;
                    self.lf_cr = false;
                    self.fields += 1;
                    if self.fields > l.max_headers {
                        return Scan::Refuse(431);
                    }
                }
                None => i = b.len(),
            }
        }
        self.total += b.len();
        if bytes.len() > budget {
            let uri = !self.line1_done || self.target > l.max_uri_bytes;
            return Scan::Refuse(if uri { 414 } else { 431 });
        }
        Scan::More
    }
}

#[cfg(test)]
mod tests;
