//! The NGINX tokenizer: words (bare or quoted), `;`, `{` and `}`, each with its line and column.
//!
//! It follows `ngx_conf_read_token` (src/core/ngx_conf_file.c): whitespace separates words, `#`
//! starts a comment only where a word could start, `${name}` keeps its braces inside a word, a
//! backslash escapes the next character, and a quoted string is one word that must be followed by
//! whitespace, `;`, `{`, `}` or `)`. In every word NGINX then turns `\"`, `\'` and `\\` into the bare
//! character and `\t`, `\r`, `\n` into tab, CR and LF; other escapes keep their backslash
//! (`\.` stays `\.`, as regexes need).

use std::fmt;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directive name or argument, unescaped; `quoted` when it was written in quotes.
    Word {
        text: String,
        quoted: bool,
    },
    Semicolon,
    Open,
    Close,
}

/// A token and where it starts (1-based line and column, columns counted in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub line: usize,
    pub column: usize,
}

/// A syntax error at a line and column of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Characters with their positions.
struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn error(&self, line: usize, column: usize, message: impl Into<String>) -> LexError {
        LexError {
            line,
            column,
            message: message.into(),
        }
    }
}

/// Splits `text` into tokens; comments are dropped.
pub fn tokenize(text: &str) -> Result<Vec<Token>, LexError> {
    let mut cur = Cursor {
        chars: text.chars().peekable(),
        line: 1,
        column: 1,
    };
    let mut out = Vec::new();
    while let Some(c) = cur.peek() {
        let (line, column) = (cur.line, cur.column);
        let kind = match c {
            c if c.is_whitespace() => {
                cur.bump();
                continue;
            }
            '#' => {
                while cur.peek().is_some_and(|c| c != '\n') {
                    cur.bump();
                }
                continue;
            }
            ';' | '{' | '}' => {
                cur.bump();
                match c {
                    ';' => Kind::Semicolon,
                    '{' => Kind::Open,
                    _ => Kind::Close,
                }
            }
            '"' | '\'' => {
                let raw = quoted(&mut cur, line, column)?;
                if let Some(next) = cur.peek() {
                    // NGINX also lets `)` follow, for `if ($a = "b")`.
                    if !(next.is_whitespace() || matches!(next, ';' | '{' | '}' | ')')) {
                        let (l, col) = (cur.line, cur.column);
                        return Err(cur.error(l, col, format!("unexpected \"{next}\"")));
                    }
                }
                Kind::Word {
                    text: unescape(&raw),
                    quoted: true,
                }
            }
            _ => Kind::Word {
                text: unescape(&bare(&mut cur)),
                quoted: false,
            },
        };
        let lua = matches!(&kind, Kind::Word { text, quoted: false } if text.ends_with("_by_lua_block"))
            && matches!(
                out.last().map(|t: &Token| &t.kind),
                None | Some(Kind::Semicolon | Kind::Open | Kind::Close)
            );
        out.push(Token { kind, line, column });
        if lua {
            lua_tokens(&mut cur, &mut out)?;
        }
    }
    Ok(out)
}

/// OpenResty: after a `*_by_lua_block` name the block is Lua, not NGINX syntax. It becomes the
/// directive's one argument (as crossplane's Lua extension reads it), then a `;`.
fn lua_tokens(cur: &mut Cursor, out: &mut Vec<Token>) -> Result<(), LexError> {
    while cur.peek().is_some_and(char::is_whitespace) {
        cur.bump();
    }
    let (l, c) = (cur.line, cur.column);
    if cur.peek() != Some('{') {
        return Err(cur.error(l, c, "expected \"{\" to start the Lua block"));
    }
    cur.bump();
    let body = lua_block(cur).ok_or_else(|| cur.error(l, c, "unterminated Lua block"))?;
    out.push(Token {
        kind: Kind::Word {
            text: body,
            quoted: true,
        },
        line: l,
        column: c,
    });
    out.push(Token {
        kind: Kind::Semicolon,
        line: cur.line,
        column: cur.column,
    });
    Ok(())
}

/// The Lua code up to the `}` that closes its block (consumed): braces nest, and strings
/// (`'...'`, `"..."`, `[[...]]`, `[==[...]==]`) and comments (`--`, `--[[...]]`) hide them.
fn lua_block(cur: &mut Cursor) -> Option<String> {
    let mut body = String::new();
    let mut depth = 0usize;
    loop {
        let c = cur.bump()?;
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(body.trim().to_string()),
            '}' => depth -= 1,
            '"' | '\'' => {
                body.push(c);
                loop {
                    let d = cur.bump()?;
                    body.push(d);
                    if d == '\\' {
                        body.push(cur.bump()?);
                    } else if d == c || d == '\n' {
                        break;
                    }
                }
                continue;
            }
            '[' if matches!(cur.peek(), Some('[' | '=')) => {
                body.push(c);
                long_bracket(cur, &mut body)?;
                continue;
            }
            '-' if cur.peek() == Some('-') => {
                body.push(c);
                body.push(cur.bump()?);
                if cur.peek() == Some('[') {
                    body.push(cur.bump()?);
                    if matches!(cur.peek(), Some('[' | '=')) {
                        long_bracket(cur, &mut body)?;
                        continue;
                    }
                }
                while let Some(d) = cur.peek() {
                    if d == '\n' {
                        break;
                    }
                    body.push(d);
                    cur.bump();
                }
                continue;
            }
            _ => {}
        }
        body.push(c);
    }
}

/// The rest of a Lua long bracket after its first `[`: `=`* `[` ... `]` `=`* `]`.
fn long_bracket(cur: &mut Cursor, body: &mut String) -> Option<()> {
    let mut level = 0;
    while cur.peek() == Some('=') {
        body.push(cur.bump()?);
        level += 1;
    }
    if cur.peek() != Some('[') {
        return Some(());
    }
    body.push(cur.bump()?);
    let close: String = std::iter::once(']')
        .chain(std::iter::repeat_n('=', level))
        .chain(std::iter::once(']'))
        .collect();
    loop {
        body.push(cur.bump()?);
        if body.ends_with(&close) {
            return Some(());
        }
    }
}

/// A quoted string, without its quotes, escapes still raw.
fn quoted(cur: &mut Cursor, line: usize, column: usize) -> Result<String, LexError> {
    let quote = cur.bump().unwrap_or('"');
    let mut raw = String::new();
    loop {
        match cur.bump() {
            None => return Err(cur.error(line, column, "unterminated quoted string")),
            Some('\\') => {
                raw.push('\\');
                if let Some(c) = cur.bump() {
                    raw.push(c);
                }
            }
            Some(c) if c == quote => return Ok(raw),
            Some(c) => raw.push(c),
        }
    }
}

/// A bare word, escapes still raw: up to whitespace, `;`, `{` or `}` (but `${name}` is kept whole).
fn bare(cur: &mut Cursor) -> String {
    let mut raw = String::new();
    while let Some(c) = cur.peek() {
        if c.is_whitespace() || matches!(c, ';' | '}') {
            break;
        }
        if c == '{' {
            if !raw.ends_with('$') || ends_with_escape(&raw) {
                break;
            }
            // `${name}`: NGINX's variable syntax, braces included (up to `}` or whitespace).
            while let Some(c) = cur.peek().filter(|c| !c.is_whitespace()) {
                cur.bump();
                raw.push(c);
                if c == '}' {
                    break;
                }
            }
            continue;
        }
        cur.bump();
        raw.push(c);
        if c == '\\' {
            if let Some(next) = cur.bump() {
                raw.push(next);
            }
        }
    }
    raw
}

/// Whether `raw` ends with an escaped character (`\$`), which does not start a variable.
fn ends_with_escape(raw: &str) -> bool {
    let backslashes = raw[..raw.len() - 1]
        .chars()
        .rev()
        .take_while(|&c| c == '\\')
        .count();
    backslashes % 2 == 1
}

/// NGINX's unescaping of a word: `\"` `\'` `\\` → the character, `\t` `\r` `\n` → the control
/// character, anything else keeps its backslash.
pub fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some(n @ ('"' | '\'' | '\\')) => {
                chars.next();
                out.push(n);
            }
            Some('t') => {
                chars.next();
                out.push('\t');
            }
            Some('r') => {
                chars.next();
                out.push('\r');
            }
            Some('n') => {
                chars.next();
                out.push('\n');
            }
            _ => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| match t.kind {
                Kind::Word { text, .. } => text,
                Kind::Semicolon => ";".into(),
                Kind::Open => "{".into(),
                Kind::Close => "}".into(),
            })
            .collect()
    }

    #[test]
    fn words_and_punctuation() {
        assert_eq!(
            words("http {\n  server_name a b;\n}\n"),
            ["http", "{", "server_name", "a", "b", ";", "}"]
        );
        assert_eq!(words("a;b{c}"), ["a", ";", "b", "{", "c", "}"]);
    }

    #[test]
    fn comments_only_where_a_word_starts() {
        assert_eq!(words("# x\nlisten 80; # y { ;\n"), ["listen", "80", ";"]);
        assert_eq!(words("return 200 a#b;"), ["return", "200", "a#b", ";"]);
    }

    #[test]
    fn quotes_keep_spaces_and_braces() {
        assert_eq!(
            words(r#"add_header X "a; b {c}" 'd "e"';"#),
            ["add_header", "X", "a; b {c}", "d \"e\"", ";"]
        );
        let t = tokenize("x \"\";").unwrap();
        assert_eq!(
            t[1].kind,
            Kind::Word {
                text: String::new(),
                quoted: true
            }
        );
    }

    #[test]
    fn escapes_as_nginx_unescapes_them() {
        assert_eq!(words(r#"x "a\"b";"#)[1], "a\"b");
        assert_eq!(words(r#"x 'a\'b';"#)[1], "a'b");
        assert_eq!(words(r#"x "a\\b";"#)[1], "a\\b");
        assert_eq!(words(r#"x "a\nb";"#)[1], "a\nb");
        assert_eq!(words(r"location ~ \.php$ {}")[2], r"\.php$");
        assert_eq!(words(r"x a\;b;"), ["x", "a\\;b", ";"]);
        assert_eq!(words(r"x a\ b;"), ["x", "a\\ b", ";"]);
    }

    #[test]
    fn variables_in_braces_stay_in_the_word() {
        assert_eq!(words("set $a ${b}c;"), ["set", "$a", "${b}c", ";"]);
        assert_eq!(words("x a${b}{"), ["x", "a${b}", "{"]);
        assert_eq!(words("x a{"), ["x", "a", "{"]);
        assert_eq!(
            words("if ($a = \"b\") {}"),
            ["if", "($a", "=", "b", ")", "{", "}"]
        );
        assert_eq!(words("x ${a b;"), ["x", "${a", "b", ";"]);
    }

    #[test]
    fn positions_are_line_and_column() {
        let t = tokenize("a;\n  bb \"c\";").unwrap();
        let pos: Vec<(usize, usize)> = t.iter().map(|t| (t.line, t.column)).collect();
        assert_eq!(pos, [(1, 1), (1, 2), (2, 3), (2, 6), (2, 9)]);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = tokenize("a;\nx \"open;\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
        assert!(e.message.contains("unterminated"), "{e}");
        let e = tokenize("x \"a\"b;").unwrap_err();
        assert_eq!((e.line, e.column), (1, 6));
    }
}
