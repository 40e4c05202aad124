//! Request-path normalization (RFC 3986 §6.2.2), so that routing decides on the path a backend
//! will actually serve: `/public/../admin`, `/public/%2e%2e/admin` and `//public/../admin` all
//! mean `/admin`, and a `path_prefix = "/public/"` route must not be reachable through them.
//!
//! [`normalize`] applies, in this order, per segment:
//! 1. percent-encoded *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
//!    escape is kept, with its hex digits upper-cased (`%2f` → `%2F`). `%2F` (`/`) and `%5C`
//!    (`\`) therefore stay encoded and never separate segments (Envoy's default);
//! 2. empty segments (`//`) are dropped when `merge_slashes` is on (a trailing `/` is kept);
//! 3. `.` segments are removed and `..` removes the segment before it (RFC 3986 §5.2.4).
//!
//! A `..` with nothing left to remove (the path climbs above `/`) and a `%` not followed by two
//! hex digits are errors: lb answers 400 rather than guess what the backend would make of them.
//!
//! The common case, a path that is already normal, is recognised by one scan and returned
//! borrowed, without allocating.

use std::borrow::Cow;

/// Why a path cannot be normalized (lb answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `..` segment climbs above `/`.
    AboveRoot,
    /// A `%` not followed by two hex digits.
    BadEscape,
}

impl PathError {
    /// Short reason for lb's 400 answer and the log.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::AboveRoot => "request path climbs above /",
            PathError::BadEscape => "malformed percent-encoding in request path",
        }
    }
}

/// The normalized form of `path` (see the module docs). Paths that do not start with `/`
/// (`*` of `OPTIONS *`) are returned unchanged.
pub fn normalize(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes(), merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    rebuild(path, merge_slashes).map(Cow::Owned)
}

/// True when [`normalize`] would return `p` unchanged. Conservative: may say false for a path
/// that is normal only after work it does not do (the slow path then agrees with the input).
fn is_normal(p: &[u8], merge_slashes: bool) -> bool {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'%' => {
                let (Some(&h), Some(&l)) = (p.get(i + 1), p.get(i + 2)) else {
                    return false;
                };
                let upper = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                if !(upper(h) && upper(l)) || is_unreserved(hex(h) << 4 | hex(l)) {
                    return false;
                }
                i += 3;
            }
            b'/' => {
                let rest = &p[i + 1..];
                let dots = rest.iter().take_while(|&&c| c == b'.').count();
                let seg_end = rest.get(dots).is_none_or(|&c| c == b'/');
                if (merge_slashes && rest.first() == Some(&b'/'))
                    || (seg_end && matches!(dots, 1 | 2))
                {
                    return false;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    true
}

/// The slow path: rebuilds the path segment by segment.
fn rebuild(path: &str, merge_slashes: bool) -> Result<String, PathError> {
    // `out` holds "/seg/seg..." without a trailing slash; segments never contain a '/', so
    // removing the last one is a truncation at its '/'.
    let mut out = String::with_capacity(path.len());
    let mut segments = path[1..].split('/').peekable();
    let mut ends_in_slash = false;
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        out.push('/');
        decode_into(raw, &mut out)?;
        let seg = &out[start + 1..];
        ends_in_slash = last && matches!(seg, "" | "." | "..");
        match seg {
            "." => out.truncate(start),
            ".." => {
                out.truncate(start);
                let parent = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
            }
            "" if last || merge_slashes => out.truncate(start),
            _ => {}
        }
    }
    if out.is_empty() || ends_in_slash {
        out.push('/');
    }
    Ok(out)
}

/// Appends `seg` to `out`, decoding escapes of unreserved characters and upper-casing the rest.
fn decode_into(seg: &str, out: &mut String) -> Result<(), PathError> {
    let b = seg.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while let Some(p) = b[i..].iter().position(|&c| c == b'%') {
        let at = i + p;
        let (h, l) = match (b.get(at + 1), b.get(at + 2)) {
            (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => (h, l),
            _ => return Err(PathError::BadEscape),
        };
        out.push_str(&seg[copied..at]);
        let byte = hex(h) << 4 | hex(l);
        if is_unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(h.to_ascii_uppercase() as char);
            out.push(l.to_ascii_uppercase() as char);
        }
        i = at + 3;
        copied = i;
    }
    out.push_str(&seg[copied..]);
    Ok(())
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, true).map(|c| c.into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e/",
            "/x%2Fy",
            "/%5C",
            "/a?",
            "*",
            "/~u/%20",
        ] {
            assert!(matches!(normalize(p, true), Ok(Cow::Borrowed(_))), "{p}");
        }
        assert!(matches!(normalize("/a//b", false), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/public/../echo").unwrap(), "/echo");
        assert_eq!(n("/public/%2e%2e/echo").unwrap(), "/echo");
        assert_eq!(n("/public/%2E%2e/echo").unwrap(), "/echo");
        assert_eq!(n("//public/../echo").unwrap(), "/echo");
        assert_eq!(n("/a/./b/.").unwrap(), "/a/b/");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/..").unwrap(), "/");
        assert_eq!(n("/a//b//").unwrap(), "/a/b/");
        assert_eq!(n("//").unwrap(), "/");
        assert_eq!(normalize("/a//b//", false).unwrap(), "/a//b//");
        assert_eq!(normalize("/a//..", false).unwrap(), "/a/");
    }

    #[test]
    fn escapes() {
        assert_eq!(n("/%7Euser/%41%62").unwrap(), "/~user/Ab");
        assert_eq!(n("/a%2fb/%5c").unwrap(), "/a%2Fb/%5C");
        assert_eq!(n("/a/%2F..").unwrap(), "/a/%2F..");
        assert_eq!(n("/a%2f%2e%2e").unwrap(), "/a%2F..");
        assert_eq!(n("/%"), Err(PathError::BadEscape));
        assert_eq!(n("/%4"), Err(PathError::BadEscape));
        assert_eq!(n("/%zz/.."), Err(PathError::BadEscape));
    }

    #[test]
    fn climbing_above_root_is_an_error() {
        for p in ["/..", "/../x", "/a/../..", "/%2e%2e/x", "/./..", "//..//.."] {
            assert_eq!(n(p), Err(PathError::AboveRoot), "{p}");
        }
        assert_eq!(normalize("//..", false).unwrap(), "/");
    }

    /// RFC 3986 §5.2.4 as written (string buffers), over a path already percent-decoded and
    /// slash-merged; climbing above the root is reported instead of clamped.
    fn reference(path: &str, merge_slashes: bool) -> Result<String, PathError> {
        let mut decoded = String::new();
        decode_into(path, &mut decoded)?;
        let mut input = decoded;
        if merge_slashes {
            while input.contains("//") {
                input = input.replace("//", "/");
            }
        }
        let mut output = String::new();
        while !input.is_empty() {
            if input.starts_with("/./") {
                input.replace_range(..3, "/");
            } else if input == "/." {
                input = "/".into();
            } else if input.starts_with("/../") || input == "/.." {
                let n = if input == "/.." { 3 } else { 4 };
                input.replace_range(..n, "/");
                let cut = output.rfind('/').ok_or(PathError::AboveRoot)?;
                output.truncate(cut);
            } else {
                let end = input[1..].find('/').map_or(input.len(), |i| i + 1);
                output.push_str(&input[..end]);
                input.replace_range(..end, "");
            }
        }
        Ok(output)
    }

    fn path() -> impl Strategy<Value = String> {
        let seg = prop::sample::select(vec![
            "", ".", "..", "a", "public", "%2e", "%2E%2e", ".%2e", "%2F", "%2f..", "x%41", "%7e",
            "a.b", "...", "%5c", "%20",
        ]);
        prop::collection::vec(seg, 0..8).prop_map(|s| format!("/{}", s.join("/")))
    }

    proptest! {
        #[test]
        fn matches_rfc_reference(p in path(), merge in any::<bool>()) {
            prop_assert_eq!(normalize(&p, merge).map(|c| c.into_owned()), reference(&p, merge));
        }

        #[test]
        fn normal_output_is_a_fixed_point_and_borrowed(p in path(), merge in any::<bool>()) {
            if let Ok(once) = normalize(&p, merge) {
                let once = once.into_owned();
                prop_assert!(matches!(normalize(&once, merge), Ok(Cow::Borrowed(_))), "{}", once);
            }
        }

        #[test]
        fn never_panics(p in "/[a-z./%0-9A-F]{0,24}", merge in any::<bool>()) {
            if let Ok(out) = normalize(&p, merge) {
                prop_assert!(out.starts_with('/'));
                prop_assert!(!out.split('/').any(|s| s == "." || s == ".."));
            }
        }
    }
}
