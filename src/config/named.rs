//! Config values that name one of a few choices (`strategy = "round_robin"`,
//! `compression = "lz4"`): each enum's names are declared once, in its [`Named::NAMES`] table,
//! and parsing, printing and the list a message offers all come from it.

use super::{
    CheckKind, ClientClose, KafkaAcks, KafkaCompression, NormalizePath, Protocol, Scheme, Strategy,
    TlsVersion,
};

/// An enum of config choices and its one table of names.
pub trait Named: Copy + PartialEq + Sized + 'static {
    /// Every choice with its name in the config, in the order messages list them.
    const NAMES: &'static [(Self, &'static str)];

    /// The choice `name` names.
    fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(v, _)| *v)
    }

    /// The name in the config.
    fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(v, _)| *v == self)
            .map_or("", |(_, n)| n)
    }

    /// The names, quoted, for messages: `"round_robin", ... or "consistent_hash"`.
    fn names() -> String {
        let quoted: Vec<String> = Self::NAMES.iter().map(|(_, n)| format!("{n:?}")).collect();
        match quoted.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => quoted.concat(),
        }
    }
}

impl Named for Strategy {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Strategy::RoundRobin, "round_robin"),
        (Strategy::LeastConnections, "least_connections"),
        (Strategy::Random, "random"),
        (Strategy::TwoChoices, "two_choices"),
        (Strategy::IpHash, "ip_hash"),
        (Strategy::ConsistentHash, "consistent_hash"),
    ];
}

impl Named for KafkaCompression {
    const NAMES: &'static [(Self, &'static str)] = &[
        (KafkaCompression::None, "none"),
        (KafkaCompression::Gzip, "gzip"),
        (KafkaCompression::Snappy, "snappy"),
        (KafkaCompression::Lz4, "lz4"),
        (KafkaCompression::Zstd, "zstd"),
    ];
}

impl Named for KafkaAcks {
    const NAMES: &'static [(Self, &'static str)] = &[
        (KafkaAcks::None, "none"),
        (KafkaAcks::Leader, "leader"),
        (KafkaAcks::All, "all"),
    ];
}

impl Named for Protocol {
    const NAMES: &'static [(Self, &'static str)] =
        &[(Protocol::Http1, "http1"), (Protocol::Http2, "http2")];
}

impl Named for CheckKind {
    const NAMES: &'static [(Self, &'static str)] = &[
        (CheckKind::Http, "http"),
        (CheckKind::Tcp, "tcp"),
        (CheckKind::Grpc, "grpc"),
    ];
}

impl Named for TlsVersion {
    const NAMES: &'static [(Self, &'static str)] =
        &[(TlsVersion::V1_2, "1.2"), (TlsVersion::V1_3, "1.3")];
}

impl Named for ClientClose {
    const NAMES: &'static [(Self, &'static str)] = &[
        (ClientClose::Finish, "finish"),
        (ClientClose::Abort, "abort"),
    ];
}

impl Named for NormalizePath {
    const NAMES: &'static [(Self, &'static str)] = &[
        (NormalizePath::Route, "route"),
        (NormalizePath::Forward, "forward"),
        (NormalizePath::Off, "off"),
    ];
}

impl Named for Scheme {
    const NAMES: &'static [(Self, &'static str)] =
        &[(Scheme::Http, "http"), (Scheme::Https, "https")];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_list_in_order() {
        for (s, n) in Strategy::NAMES {
            assert_eq!(Strategy::parse(n), Some(*s));
            assert_eq!(s.as_str(), *n);
        }
        assert_eq!(Strategy::parse("fastest"), None);
        assert_eq!(ClientClose::names(), r#""finish" or "abort""#);
        assert_eq!(
            KafkaCompression::names(),
            r#""none", "gzip", "snappy", "lz4" or "zstd""#
        );
    }
}
