//! `split_clients` → a route's `split`: the block's string becomes `split_by`, its lines the
//! entries (`10% v2;` → `{ upstream = "v2", percent = 10 }`, `* v1;` → `{ upstream = "v1" }`).
//! lb hashes as NGINX does (MurmurHash2 of the key, the same cumulative bounds), so an imported
//! split sends the same clients to the same upstreams. A block lb cannot express refuses the
//! import of the locations that proxy to its variable.

use super::model::{Note, Notes};
use super::tree::{Directive, Loc};

/// A `split_clients` block that lb can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitClients {
    /// lb's `split_by` (`client`, `header:NAME`, `cookie:NAME`, `uri`, `path`).
    pub by: String,
    pub parts: Vec<Part>,
    pub loc: Loc,
}

/// One line of the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The percentage as a TOML number (`10`, `0.5`); `None`: `*`, the rest.
    pub percent: Option<String>,
    /// What the variable becomes: the `proxy_pass` target (an upstream name or an address).
    pub value: String,
}

/// A `split_clients` block, as written, by its variable (without `$`).
#[derive(Debug)]
pub struct Block {
    pub variable: String,
    pub loc: Loc,
    /// `Err`: why lb cannot carry it (a refusal once a `proxy_pass` uses it).
    pub split: Result<SplitClients, String>,
    pub used: bool,
}

/// Reads `split_clients STRING $variable { ... }`.
pub fn block(d: &Directive) -> Option<Block> {
    let [key, var] = d.args.as_slice() else {
        return None;
    };
    let variable = var.strip_prefix('$')?.to_string();
    Some(Block {
        variable,
        loc: d.loc.clone(),
        split: parse(key, d),
        used: false,
    })
}

fn parse(key: &str, d: &Directive) -> Result<SplitClients, String> {
    let by = split_by(key).ok_or_else(|| {
        format!(
            "key {key:?}: lb splits by the client address ($remote_addr), a header ($http_NAME), \
             a cookie ($cookie_NAME), $request_uri or $uri"
        )
    })?;
    let mut parts = Vec::new();
    let mut sum = 0u32;
    for line in d.children() {
        let value = match line.args.as_slice() {
            [v] if !v.is_empty() && !v.contains('$') => v.clone(),
            _ => {
                let args = line.args.join(" ");
                return Err(format!(
                    "line {} {args:?}: lb needs an upstream name or address for each share",
                    line.name
                ));
            }
        };
        if parts.last().is_some_and(|p: &Part| p.percent.is_none()) {
            return Err(format!(
                "{} {value}: after `*`, which takes every client left (lb needs `*` last)",
                line.name
            ));
        }
        let percent = match line.name.as_str() {
            "*" => None,
            p => {
                let hundredths = hundredths(p).ok_or_else(|| format!("invalid percent {p:?}"))?;
                sum += hundredths;
                // As a TOML number (`010%` would not be one).
                Some(match hundredths % 100 {
                    0 => (hundredths / 100).to_string(),
                    f => format!("{}.{f:02}", hundredths / 100)
                        .trim_end_matches('0')
                        .to_string(),
                })
            }
        };
        parts.push(Part { percent, value });
    }
    let rest = parts.last().is_some_and(|p| p.percent.is_none());
    if sum > 10_000 {
        return Err("percent total is greater than 100%".to_string());
    }
    if sum < 10_000 && !rest {
        return Err(format!(
            "the shares add up to {}% without `*`: NGINX leaves the variable empty for the rest, \
             which lb cannot proxy",
            sum as f64 / 100.0
        ));
    }
    Ok(SplitClients {
        by,
        parts,
        loc: d.loc.clone(),
    })
}

/// lb's `split_by` for a `split_clients` string made of one variable.
fn split_by(key: &str) -> Option<String> {
    let name = key
        .strip_prefix("${")
        .and_then(|k| k.strip_suffix('}'))
        .or_else(|| key.strip_prefix('$'))?;
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some(match name {
        "remote_addr" => "client".to_string(),
        "request_uri" => "uri".to_string(),
        "uri" => "path".to_string(),
        _ => match (name.strip_prefix("http_"), name.strip_prefix("cookie_")) {
            (Some(h), _) if !h.is_empty() => format!("header:{}", h.replace('_', "-")),
            (_, Some(c)) if !c.is_empty() => format!("cookie:{c}"),
            _ => return None,
        },
    })
}

/// `10%`, `0.5%` in hundredths of a percent (NGINX's `ngx_atofp(..., 2)`); not 0.
fn hundredths(p: &str) -> Option<u32> {
    let n = p.strip_suffix('%')?;
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 2 || int.len() > 3 {
        return None;
    }
    let value = int.parse::<u32>().ok()? * 100 + format!("{frac:0<2}").parse::<u32>().ok()?;
    (value > 0).then_some(value)
}

/// The `split_clients` variable a `proxy_pass` target is (`$variant`, `${variant}`).
pub fn variable(target: &str) -> Option<&str> {
    target
        .strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .or_else(|| target.strip_prefix('$'))
}

/// What becomes of a location proxying to `$variable`: the split, or a refusal (the block
/// cannot be carried), or `None` with a note (no such `split_clients`).
pub fn for_location(
    blocks: &mut [Block],
    variable: &str,
    location: &str,
    at: &Loc,
    refusals: &mut Vec<Note>,
    notes: &mut Notes,
) -> Option<SplitClients> {
    let Some(b) = blocks.iter_mut().find(|b| b.variable == variable) else {
        let msg = format!(
            "http://${variable}: variables are not supported, location skipped ({location}; \
             a split_clients variable would be carried over)"
        );
        notes.add(at, "proxy_pass", msg);
        return None;
    };
    b.used = true;
    match &b.split {
        Ok(s) => Some(s.clone()),
        Err(why) => {
            refusals.push(Note {
                loc: b.loc.clone(),
                name: "split_clients".to_string(),
                message: format!(
                    "{why}; {location} at {at} proxies to ${variable}, import refused"
                ),
            });
            None
        }
    }
}

/// A note for each block no `proxy_pass` used.
pub fn unused(blocks: &[Block], notes: &mut Notes) {
    for b in blocks.iter().filter(|b| !b.used) {
        let msg = format!(
            "${} is not a proxy_pass target here: not carried over (lb splits traffic between \
             upstreams only)",
            b.variable
        );
        notes.add(&b.loc, "split_clients", msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_percents() {
        assert_eq!(split_by("${remote_addr}").as_deref(), Some("client"));
        assert_eq!(split_by("$remote_addr").as_deref(), Some("client"));
        assert_eq!(split_by("$http_x_user").as_deref(), Some("header:x-user"));
        assert_eq!(
            split_by("$cookie_session").as_deref(),
            Some("cookie:session")
        );
        assert_eq!(split_by("$request_uri").as_deref(), Some("uri"));
        assert_eq!(split_by("${remote_addr}AAA"), None);
        assert_eq!(split_by("$binary_remote_addr"), None);
        assert_eq!(split_by("$arg_x"), None);
        assert_eq!(hundredths("10%"), Some(1000));
        assert_eq!(hundredths("0.5%"), Some(50));
        assert_eq!(hundredths("12.34%"), Some(1234));
        assert_eq!(hundredths("0%"), None);
        assert_eq!(hundredths("1.234%"), None);
        assert_eq!(hundredths("10"), None);
        assert_eq!(variable("$variant"), Some("variant"));
        assert_eq!(variable("${variant}"), Some("variant"));
        assert_eq!(variable("api"), None);
    }
}
