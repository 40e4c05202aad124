//! NGINX's `return` → a route lb answers itself (`respond`, with `body` or `location`).
//!
//! `return CODE [TEXT]`, `return CODE URL` (301, 302, 303, 307, 308) and `return URL` (302)
//! map one to one; the text's variables must be ones lb fills in (`$scheme`, `$host`,
//! `$request_uri`, `$uri`, `$args`, `$is_args`, `$remote_addr`; `$server_name` becomes the
//! server's first name). In a `server` block, `return` answers every request before any
//! location is looked at (NGINX's server-level rewrite phase), so the server's locations are
//! unreachable and become one `/` route.

use super::notes::Notes;
use super::tree::Directive;
use crate::config::respond::{is_redirect, Template};

/// A route's answer as the import writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    pub status: u16,
    pub body: Option<String>,
    pub location: Option<String>,
    /// `default_type` (NGINX's own default: `text/plain`), for a text.
    pub content_type: Option<String>,
}

/// The answer of a `return` line, `None` (with a note) when lb cannot give it. `server_name`:
/// the server's first name, for `$server_name`; `default_type`: NGINX's `default_type` in force.
pub fn parse(
    d: &Directive,
    server_name: Option<&str>,
    default_type: Option<&str>,
    notes: &mut Notes,
) -> Option<Respond> {
    let skip = |notes: &mut Notes, why: String| {
        notes.add(&d.loc, "return", format!("{why}; skipped"));
        None
    };
    let (code, text) = match status_and_text(&d.args) {
        Ok(r) => r,
        Err(why) => return skip(notes, why),
    };
    let text = match text.map(|t| variables(&t, server_name)).transpose() {
        Ok(t) => t,
        Err(m) => return skip(notes, m),
    };
    if is_redirect(code) {
        let Some(location) = text else {
            return skip(notes, format!("{code} without a URL"));
        };
        if location.starts_with('/') {
            let msg =
                "relative URL: NGINX makes it absolute (absolute_redirect), lb sends it as written";
            notes.add(&d.loc, "return", msg);
        }
        return Some(Respond {
            status: code,
            body: None,
            location: Some(location),
            content_type: None,
        });
    }
    if matches!(code, 204 | 304) && text.is_some() {
        notes.add(
            &d.loc,
            "return",
            format!("{code} has no body: the text is dropped"),
        );
        return Some(Respond {
            status: code,
            body: None,
            location: None,
            content_type: None,
        });
    }
    // NGINX sends `default_type` (or `text/plain` without one); a type by file extension
    // (`types`, mime.types) is not looked up.
    let content_type = text
        .as_ref()
        .map(|_| default_type.unwrap_or("text/plain").to_string());
    Some(Respond {
        status: code,
        body: text,
        location: None,
        content_type,
    })
}

/// A `return`'s status and text (or URL): `return CODE [TEXT]`, or `return URL` (a 302).
/// `Err`: why lb cannot answer so.
fn status_and_text(args: &[String]) -> Result<(u16, Option<String>), String> {
    let (code, text) = match args {
        [one] if !one.bytes().all(|b| b.is_ascii_digit()) => {
            let absolute = ["http://", "https://", "$scheme"]
                .iter()
                .any(|p| one.starts_with(p));
            if !absolute {
                return Err(format!("{one}: NGINX takes a lone URL only with a scheme"));
            }
            (302, Some(one.clone()))
        }
        [code] => (code.parse().unwrap_or(0), None),
        [code, text] => (code.parse().unwrap_or(0), Some(text.clone())),
        _ => return Err("expects a code and an optional text or URL".into()),
    };
    if code == 444 {
        return Err("444 (close without an answer) is NGINX's own; lb always answers".into());
    }
    if !(200..=599).contains(&code) {
        return Err(format!("status {code}: lb answers 200 to 599"));
    }
    Ok((code, text))
}

/// NGINX's text with `$server_name` replaced, checked against the variables lb fills in.
fn variables(text: &str, server_name: Option<&str>) -> Result<String, String> {
    let mut t = text.to_string();
    for form in ["${server_name}", "$server_name"] {
        if t.contains(form) {
            match server_name {
                Some(n) if !n.contains('*') && !n.starts_with('.') && !n.starts_with('~') => {
                    t = t.replace(form, n)
                }
                _ => return Err("$server_name without a plain server_name".into()),
            }
        }
    }
    Template::parse(&t)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::tree::Loc;

    fn ret(args: &[&str]) -> (Option<Respond>, Vec<String>) {
        let d = Directive {
            name: "return".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            loc: Loc {
                file: "nginx.conf".into(),
                line: 1,
            },
            column: 1,
            block: None,
        };
        let mut notes = Notes::default();
        let r = parse(
            &d,
            Some("example.com"),
            Some("application/json"),
            &mut notes,
        );
        (r, notes.0.iter().map(|n| n.message.clone()).collect())
    }

    #[test]
    fn codes_texts_and_urls() {
        let r = ret(&["301", "https://$server_name$request_uri"]).0.unwrap();
        assert_eq!(
            (r.status, r.location.as_deref()),
            (301, Some("https://example.com$request_uri"))
        );
        let r = ret(&["https://$host/"]).0.unwrap();
        assert_eq!(
            (r.status, r.location.as_deref()),
            (302, Some("https://$host/"))
        );
        let r = ret(&["200", "ok\n"]).0.unwrap();
        assert_eq!((r.status, r.body.as_deref()), (200, Some("ok\n")));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(ret(&["204"]).0.unwrap().body, None);
        let (r, notes) = ret(&["444"]);
        assert!(r.is_none() && notes[0].contains("444"), "{notes:?}");
        let (r, notes) = ret(&["301"]);
        assert!(
            r.is_none() && notes[0].contains("without a URL"),
            "{notes:?}"
        );
        let (r, notes) = ret(&["200", "$hostname"]);
        assert!(
            r.is_none() && notes[0].contains("unknown variable $hostname"),
            "{notes:?}"
        );
    }
}
