//! lb's two clocks: process-relative milliseconds for state that only this process reads
//! (slow start, ejections, latency windows), and Unix milliseconds for what is shown to people.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the process started, from a monotonic clock. Never 0 once running, so 0
/// can mean "unset" in atomics that hold these values.
pub fn process_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| Instant::now() - Duration::from_millis(1));
    start.elapsed().as_millis() as u64
}

/// Wall-clock Unix time in milliseconds (for `/status`, events and logs).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
