//! `lb` — wires the CLI to the library: parse flags, load and validate the config, run; or
//! `lb import-nginx`, which translates an NGINX config.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lb::observe::logging::LogFormat;

#[path = "alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

/// A load balancer and reverse proxy for HTTP APIs, built on pingora.
#[derive(Parser, Debug)]
#[command(
    name = "lb",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Path to the TOML config file.
    #[arg(short, long, value_name = "PATH", required = true)]
    config: Option<PathBuf>,
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Translate an NGINX config (its http context and what it includes) into an lb config;
    /// every directive not carried over is listed on stderr.
    ImportNginx {
        /// The NGINX config: nginx.conf, or a file of the http context.
        path: PathBuf,
        /// Write the lb config to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print PATH's parse tree alone (includes not followed) as crossplane's JSON.
        #[arg(long, hide = true)]
        dump_tree: bool,
        /// Import locations protected by directives lb does not enforce (auth_basic,
        /// auth_request, allow/deny, limit_except, satisfy, ssl_verify_client) as PUBLIC
        /// routes, with a note each, instead of refusing the import.
        #[arg(long)]
        allow_insecure: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(config_path) = cli.config.clone() else {
        let Some(Command::ImportNginx {
            path,
            output,
            dump_tree,
            allow_insecure,
        }) = cli.command
        else {
            unreachable!("clap requires --config without a subcommand");
        };
        let options = lb::import::Options { allow_insecure };
        return import_nginx(&path, output.as_deref(), dump_tree, options);
    };
    run(cli, &config_path)
}

/// `lb import-nginx`: the TOML to stdout or `output`, the notes to stderr; 1 and one line when
/// nothing was written.
fn import_nginx(
    path: &Path,
    output: Option<&Path>,
    dump_tree: bool,
    options: lb::import::Options,
) -> ExitCode {
    let result = if dump_tree {
        lb::import::dump_tree(path)
            .map(|json| (json + "\n", Vec::new()))
            .map_err(lb::import::ImportError::from)
    } else {
        lb::import::import_with(path, options).map(|i| (i.toml, i.notes))
    };
    let (text, notes) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lb import-nginx: {e}");
            return ExitCode::FAILURE;
        }
    };
    match output {
        Some(file) => {
            if let Err(e) = std::fs::write(file, &text) {
                eprintln!("lb import-nginx: cannot write {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{text}"),
    }
    for n in notes {
        eprintln!("{n}");
    }
    ExitCode::SUCCESS
}

fn run(cli: Cli, config_path: &Path) -> ExitCode {
    let text = std::fs::read_to_string(config_path).unwrap_or_default();
    let config = match lb::config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            eprintln!(
                "{}: configuration invalid ({} problem(s))",
                config_path.display(),
                e.problems.len()
            );
            return ExitCode::FAILURE;
        }
    };
    let warnings = config.warning_lines(config_path);
    if cli.check {
        for w in warnings
            .iter()
            .chain(&lb::discovery::check_names(&config, config_path))
        {
            eprintln!("{w}");
        }
        print!("{}", config.summary());
        println!("{}: configuration OK", config_path.display());
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
    lb::server::run(config, config_path, hash, opts)
}
