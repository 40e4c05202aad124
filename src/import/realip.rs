//! NGINX's realip module (`set_real_ip_from`, `real_ip_header`, `real_ip_recursive`) → lb's
//! `server.real_ip_from`, `real_ip_header`, `real_ip_recursive`. lb has one setting for all
//! servers (the caller picks it and notes servers that differ). `real_ip_header
//! proxy_protocol` needs no key: a `listen ... proxy_protocol` listener already makes the PROXY
//! header's address the client in lb.

use super::emit::string;
use super::model::{At, Notes};

/// The realip lines in effect for the servers (each `None`: NGINX's default).
pub struct RealIpLines {
    pub from: Option<At<Vec<String>>>,
    pub header: Option<At<Vec<String>>>,
    pub recursive: Option<At<Vec<String>>>,
}

impl RealIpLines {
    /// Adds the `[server]` keys (key, TOML value, comment); `proxied`: the listeners of
    /// `listen ... proxy_protocol`.
    pub fn keys(
        &self,
        proxied: &[String],
        keys: &mut Vec<(&'static str, String, String)>,
        notes: &mut Notes,
    ) {
        let header = self.header.as_ref().and_then(|h| h.value.first().cloned());
        let from = self.from.as_ref().map(|f| self.networks(f, notes));
        if header.as_deref() == Some("proxy_protocol") {
            if let Some(h) = &self.header {
                let msg = if proxied.is_empty() {
                    "no listener has proxy_protocol: ignored".to_string()
                } else {
                    "lb takes the PROXY header's address as the client on proxy_protocol \
                     listeners whoever the peer is (NGINX only from set_real_ip_from peers)"
                        .to_string()
                };
                notes.add(&h.loc, "real_ip_header proxy_protocol", msg);
            }
            return;
        }
        if !proxied.is_empty() {
            let msg = "NGINX's $remote_addr stays the load balancer's address without \
                       `real_ip_header proxy_protocol`; lb takes the PROXY header's address as the client";
            let at = self
                .header
                .as_ref()
                .or(self.from.as_ref())
                .map(|a| a.loc.clone());
            if let Some(loc) = at {
                notes.add(&loc, "listen ... proxy_protocol", msg);
            }
        }
        let Some((from, nets)) = self.from.as_ref().zip(from) else {
            return;
        };
        if nets.is_empty() {
            return;
        }
        let list: Vec<String> = nets.iter().map(|n| string(n)).collect();
        keys.push((
            "real_ip_from",
            format!("[{}]", list.join(", ")),
            format!("{}: set_real_ip_from", from.loc),
        ));
        if let (Some(name), Some(h)) = (header, &self.header) {
            keys.push((
                "real_ip_header",
                string(&name),
                format!("{}: real_ip_header", h.loc),
            ));
        }
        if let Some(r) = &self.recursive {
            let on = r.value.first().is_some_and(|v| v == "on");
            keys.push((
                "real_ip_recursive",
                on.to_string(),
                format!("{}: real_ip_recursive", r.loc),
            ));
        }
    }

    /// The addresses and networks of `set_real_ip_from` lb can take (`unix:` and host names
    /// are noted and left out).
    fn networks(&self, from: &At<Vec<String>>, notes: &mut Notes) -> Vec<String> {
        let mut nets = Vec::new();
        for n in &from.value {
            let ip = n.split_once('/').map_or(n.as_str(), |(ip, _)| ip);
            if ip.parse::<std::net::IpAddr>().is_ok() {
                nets.push(n.clone());
            } else {
                let msg = format!("{n}: lb takes IP addresses and networks here, left out");
                notes.add(&from.loc, "set_real_ip_from", msg);
            }
        }
        nets
    }
}
