//! Small leaf helpers every layer may use: clocks ([`time`]) and hashing ([`hash`]). Nothing here
//! knows about lb's config or state.

pub mod hash;
pub mod time;
