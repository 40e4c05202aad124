//! Small leaf helpers every layer may use: clocks ([`time`]), hashing ([`hash`]), protobuf
//! varints ([`proto`]) and `Host` syntax ([`host`]); for tests, fresh temporary directories (`testdir`). Nothing here knows about lb's config or state.

pub mod hash;
pub mod host;
pub mod proto;
#[cfg(test)]
pub mod testdir;
pub mod time;
