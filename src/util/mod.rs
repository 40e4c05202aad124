//! Small leaf helpers every layer may use: clocks ([`time`]), hashing ([`hash`]) and protobuf
//! varints ([`proto`]). Nothing here knows about lb's config or state.

pub mod hash;
pub mod proto;
pub mod time;
