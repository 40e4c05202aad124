//! The load-test history ([`crate::state::history`] keeps it): the sampler ([`run`]), the
//! `/history` and `/history.csv` answers ([`query`]) and the `/report` page ([`report`]).

pub mod query;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Shared;
use crate::state::history::{Layout, TickBackend, TickUpstream};
use crate::util::time::unix_ms;

/// The sampler: once a second, on the second.
pub async fn run(shared: Arc<Shared>) {
    loop {
        let now = unix_ms();
        let next = (now / 1000 + 1) * 1000;
        tokio::time::sleep(Duration::from_millis(next - now)).await;
        let snap = shared.snapshot.load_full();
        let a = &snap.config.analytics;
        if a.history.is_zero() {
            continue;
        }
        let backends: usize = snap.upstreams.iter().map(|u| u.backends.len()).sum();
        let layout = Layout::new(a, snap.upstreams.len(), backends);
        let ups: Vec<TickUpstream> = snap
            .upstreams
            .iter()
            .map(|u| TickUpstream {
                name: u.name().into(),
                own: u.state.own.totals(),
                backends: u
                    .backends
                    .iter()
                    .map(|b| TickBackend {
                        address: b.address.as_str().into(),
                        name: b.name.clone(),
                        totals: b.state.stats.totals(),
                        in_flight: b.state.in_flight(),
                        state: if b.down { 1 } else { b.state.state() as u8 },
                    })
                    .collect(),
            })
            .collect();
        let _seconds = shared.history.tick(next / 1000 - 1, layout, &ups);
    }
}
