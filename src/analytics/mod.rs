//! Analytics that leave the process: the [`kafka`] producer, which sends the records the request
//! path, health checks and reloads put in the bounded queue of [`crate::observe::stream`].

pub mod kafka;
