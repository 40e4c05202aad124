//! `lb` — wires the CLI to the library: parse flags, load and validate the config, run.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lb::observe::logging::LogFormat;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A load balancer and reverse proxy for HTTP APIs, built on pingora.
#[derive(Parser, Debug)]
#[command(name = "lb", version, about)]
struct Cli {
    /// Path to the TOML config file.
    #[arg(short, long, value_name = "PATH")]
    config: PathBuf,
    /// Validate the config, print a summary and exit (non-zero on any problem).
    #[arg(short = 't', long)]
    check: bool,
    /// Take over the listening sockets of a running lb serving the same config file.
    #[arg(long)]
    upgrade: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.config).unwrap_or_default();
    let config = match lb::config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            eprintln!(
                "{}: configuration invalid ({} problem(s))",
                cli.config.display(),
                e.problems.len()
            );
            return ExitCode::FAILURE;
        }
    };
    let warnings = config.warning_lines(&cli.config);
    if cli.check {
        for w in &warnings {
            eprintln!("{w}");
        }
        print!("{}", config.summary());
        println!("{}: configuration OK", cli.config.display());
        return ExitCode::SUCCESS;
    }
    if !cli.upgrade {
        if let Err(e) = lb::server::check_listeners(&config) {
            eprintln!("lb: {e}");
            return ExitCode::FAILURE;
        }
    }
    lb::observe::logging::init(cli.log_format, config.server.log.as_deref());
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let hash = lb::reload::hash_text(&text);
    let opts = lb::server::RunOptions {
        upgrade: cli.upgrade,
    };
    lb::server::run(config, &cli.config, hash, opts)
}
