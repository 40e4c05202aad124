//! `tracing` set-up: `RUST_LOG`-style filters (env var first, then `server.log`), human format on a
//! terminal or JSON with `--log-format json`. pingora's own `log` records are bridged in.

use tracing_subscriber::EnvFilter;

/// pingora logs every failed request at error level; lb logs state changes once instead.
pub const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora=warn";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat, config_filter: Option<&str>) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| config_filter.map(str::to_string))
        .unwrap_or_else(|| DEFAULT_FILTER.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?}: {e}; using {DEFAULT_FILTER:?}");
        EnvFilter::new(DEFAULT_FILTER)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
