//! Routes lb answers itself (NGINX's `return`): a status with a body, or a redirect, whose text
//! may name a few request variables (`$host`, `$request_uri`, …) filled in per request. The
//! checks of a route's `respond`, `body`, `location` and `content_type` are in `check`.

use std::fmt;

mod check;

/// `respond`, `body` and `location` of a route that does not proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    pub status: u16,
    /// The body (none: empty). Not with a redirect status.
    pub body: Option<Template>,
    /// The `Location` of a redirect (301, 302, 303, 307, 308), where it is required.
    pub location: Option<Template>,
    /// The body's Content-Type (none: `text/plain; charset=utf-8`).
    pub content_type: Option<String>,
}

/// The statuses that redirect (and need a `location`).
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// A request variable a [`Template`] may name, as NGINX spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `http` or `https`: how the client reached lb.
    Scheme,
    /// The client's host, lower case, no port (NGINX's `$host`).
    Host,
    /// The request target as sent, query included.
    RequestUri,
    /// The normalized path.
    Uri,
    /// The query (without `?`), or nothing.
    Args,
    /// `?` when there is a query, else nothing.
    IsArgs,
    /// The client's address.
    RemoteAddr,
}

impl Var {
    const ALL: [(&'static str, Var); 7] = [
        ("scheme", Var::Scheme),
        ("host", Var::Host),
        ("request_uri", Var::RequestUri),
        ("uri", Var::Uri),
        ("args", Var::Args),
        ("is_args", Var::IsArgs),
        ("remote_addr", Var::RemoteAddr),
    ];

    fn name(self) -> &'static str {
        Var::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }
}

/// A piece of a text with variables: literal text, or a variable's name.
#[derive(Debug, PartialEq, Eq)]
pub enum Token<'a> {
    Text(String),
    Name(&'a str),
}

/// Splits `text` into literal runs and the names of its `$name` and `${name}` variables, as
/// NGINX reads them; a `$` not followed by a name is literal. `Err`: an unclosed `${`.
pub fn tokens(text: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        lit.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => return Err(format!("unclosed ${{ in {text:?}")),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        if name.is_empty() {
            lit.push('$');
            rest = after;
            continue;
        }
        if !lit.is_empty() {
            out.push(Token::Text(std::mem::take(&mut lit)));
        }
        out.push(Token::Name(name));
        rest = &after[len..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Token::Text(lit));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Var(Var),
}

/// Text with `$name` or `${name}` variables, parsed once when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Part>);

impl Template {
    /// Parses `text`; `Err` names the first unknown variable and lists the known ones. A `$` not
    /// followed by a name is kept as it is.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        for token in tokens(text)? {
            parts.push(match token {
                Token::Text(t) => Part::Text(t),
                Token::Name(name) => match Var::ALL.iter().find(|(n, _)| *n == name) {
                    Some((_, var)) => Part::Var(*var),
                    None => {
                        let known: Vec<String> =
                            Var::ALL.iter().map(|(n, _)| format!("${n}")).collect();
                        return Err(format!(
                            "unknown variable ${name} (known: {})",
                            known.join(", ")
                        ));
                    }
                },
            });
        }
        Ok(Template(parts))
    }

    /// The text with each variable replaced by `value(var)`.
    pub fn render(&self, mut value: impl FnMut(Var, &mut String)) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => value(*v, &mut out),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match p {
                Part::Text(t) => f.write_str(t)?,
                Part::Var(v) => write!(f, "${{{}}}", v.name())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_parsed_once_and_rendered_per_request() {
        let t = Template::parse("https://$host${request_uri}x$ cost").unwrap();
        let out = t.render(|v, s| {
            s.push_str(match v {
                Var::Host => "example.com",
                Var::RequestUri => "/a?b",
                _ => "?",
            })
        });
        assert_eq!(out, "https://example.com/a?bx$ cost");
        let e = Template::parse("https://$hostname/").unwrap_err();
        assert!(
            e.starts_with("unknown variable $hostname (known: $scheme, $host"),
            "{e}"
        );
        assert!(Template::parse("${host").is_err());
        assert_eq!(Template::parse("plain").unwrap().to_string(), "plain");
    }
}
