//! `routes[i].split` (a target of several upstreams by share, NGINX's `split_clients`) and
//! `routes[i].fault` (delays and aborts injected into a share of requests, Envoy's fault
//! filter): their validated forms. Both are route settings, so a reload changes them.
//!
//! The file structs (serde, as written) are in `file`, the checks that turn them into these
//! types in `check`, on the shared machinery of `config::validate`.

use std::time::Duration;

mod check;
pub(in crate::config) mod file;

use super::HashKey;

/// Shares are counted in hundredths of a percent, as NGINX's `split_clients` (`0.5%`).
pub const SHARE_SCALE: u32 = 10_000;

/// `routes[i].split` with its `split_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// In file order: a request goes to the first part whose cumulative share covers its hash.
    pub parts: Vec<SplitPart>,
    pub by: SplitBy,
}

/// One entry of `split`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPart {
    pub upstream: String,
    /// Hundredths of a percent; `None`: the rest (NGINX's `*`, the last entry).
    pub share: Option<u32>,
}

/// `routes[i].split_by`: what picks a request's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitBy {
    /// MurmurHash2 of this request key, as NGINX's `split_clients` hashes its string: the same
    /// key always lands on the same upstream while the shares stay.
    Key(HashKey),
    /// A fresh draw per request.
    Random,
}

/// Default `routes[i].split_by`: the client's address (NGINX's `$remote_addr`).
pub const DEFAULT_SPLIT_BY: SplitBy = SplitBy::Key(HashKey::ClientIp);

impl SplitBy {
    /// As written in the config.
    pub fn describe(&self) -> String {
        match self {
            SplitBy::Key(HashKey::ClientIp) => "client".to_string(),
            SplitBy::Key(k) => k.describe(),
            SplitBy::Random => "random".to_string(),
        }
    }
}

/// `routes[i].fault`: Envoy's fault filter on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Only requests carrying this header (lower case) are eligible; `None`: every request.
    pub header: Option<String>,
}

/// `delay` and `delay_percent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDelay {
    pub duration: Duration,
    /// Hundredths of a percent of eligible requests.
    pub share: u32,
}

/// `abort_status`, `abort_grpc_status` and `abort_percent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAbort {
    /// The HTTP status (a gRPC call gets its gRPC equivalent, unless `grpc_status` is set).
    pub status: Option<u16>,
    /// gRPC calls (and, without `status`, every request) get HTTP 200 with this `grpc-status`.
    pub grpc_status: Option<u8>,
    /// Hundredths of a percent of eligible requests.
    pub share: u32,
}

/// Default `delay_percent` and `abort_percent`: every eligible request.
pub const DEFAULT_FAULT_PERCENT: u32 = SHARE_SCALE;
