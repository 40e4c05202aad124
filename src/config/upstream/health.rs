//! Validation of an upstream's `health_check` (active probes: type, path, expected status,
//! interval, thresholds) and `passive` (ejection on failures) tables, each problem with its key
//! path.

use std::time::Duration;

use toml::Value;

use super::file::{HealthCheckFile, PassiveFile};
use crate::config::validate::{join, Checker};
use crate::config::*;

impl Checker {
    pub(super) fn health_check(
        &mut self,
        path: &str,
        h: HealthCheckFile,
    ) -> Option<HealthCheckConfig> {
        let kind = self.choice(
            join(path, "type"),
            h.kind.as_deref(),
            CheckKind::Http,
            |n| format!("unknown check type {n:?} (expected {})", CheckKind::names()),
        );
        let check_path = h.path.unwrap_or_else(|| DEFAULT_HC_PATH.to_string());
        if !check_path.starts_with('/') {
            self.problem(join(path, "path"), "must start with '/'");
        }
        let expected_status = match h.expected_status {
            None => (200, 399),
            Some(v) => self
                .status_range(&join(path, "expected_status"), &v)
                .unwrap_or((200, 399)),
        };
        let interval = self.duration(
            &join(path, "interval"),
            h.interval.as_deref(),
            DEFAULT_HC_INTERVAL,
            false,
        );
        let timeout = self.duration(
            &join(path, "timeout"),
            h.timeout.as_deref(),
            DEFAULT_HC_TIMEOUT,
            false,
        );
        Some(HealthCheckConfig {
            kind,
            path: check_path,
            expected_status,
            host: h.host,
            service: h.service.unwrap_or_default(),
            interval,
            timeout,
            healthy_threshold: self.int(
                &join(path, "healthy_threshold"),
                h.healthy_threshold,
                1,
                1000,
                DEFAULT_HC_HEALTHY as i64,
            ) as u32,
            unhealthy_threshold: self.int(
                &join(path, "unhealthy_threshold"),
                h.unhealthy_threshold,
                1,
                1000,
                DEFAULT_HC_UNHEALTHY as i64,
            ) as u32,
        })
    }

    fn status_range(&mut self, path: &str, v: &Value) -> Option<(u16, u16)> {
        let parsed = match v {
            Value::Integer(n) => u16::try_from(*n).ok().map(|n| (n, n)),
            Value::String(s) => match s.split_once('-') {
                Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                None => s.trim().parse().ok().map(|n| (n, n)),
            },
            _ => None,
        };
        match parsed {
            Some((lo, hi)) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => {
                Some((lo, hi))
            }
            _ => {
                self.problem(
                    path,
                    format!("expected a status code or range like \"200-399\", got {v}"),
                );
                None
            }
        }
    }

    pub(super) fn passive(&mut self, path: &str, p: PassiveFile) -> PassiveConfig {
        let d = PassiveConfig::default();
        let ejection_time = self.duration(
            &join(path, "ejection_time"),
            p.ejection_time.as_deref(),
            d.ejection_time,
            false,
        );
        let max_ejection_time = self.duration(
            &join(path, "max_ejection_time"),
            p.max_ejection_time.as_deref(),
            d.max_ejection_time,
            false,
        );
        if max_ejection_time < ejection_time {
            self.problem(
                join(path, "max_ejection_time"),
                "must not be shorter than ejection_time",
            );
        }
        PassiveConfig {
            consecutive_failures: self.int(
                &join(path, "consecutive_failures"),
                p.consecutive_failures,
                0,
                1000,
                d.consecutive_failures as i64,
            ) as u32,
            eject_on_5xx: p.eject_on_5xx.unwrap_or(false),
            ejection_time,
            max_ejection_time,
            max_ejected_percent: self.int(
                &join(path, "max_ejected_percent"),
                p.max_ejected_percent,
                0,
                100,
                d.max_ejected_percent as i64,
            ) as u32,
            slow_start: self.duration(
                &join(path, "slow_start"),
                p.slow_start.as_deref(),
                Duration::ZERO,
                true,
            ),
        }
    }
}
