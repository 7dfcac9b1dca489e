//! Command line: `voxgate [serve|migrate|check-config] [--config FILE] [overrides]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(name = "voxgate", version, about = "Self-hosted SIP/RTP softswitch")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and exit non-zero naming the offending key.
    CheckConfig,
}

/// Flags shared by every subcommand; they override the file and the environment.
#[derive(Debug, Args)]
struct CommonArgs {
    /// Config file (default: $VOXGATE_CONFIG, else ./voxgate.toml if it exists).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<String>,
    /// Overrides `database.url`.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Overrides `api.listen`.
    #[arg(long, global = true, value_name = "ADDR")]
    api_listen: Option<String>,
    /// Overrides `log.level` (tracing filter syntax).
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
}

impl CommonArgs {
    fn overrides(&self) -> Overrides {
        let mut values = Vec::new();
        let mut push = |key: &str, v: &Option<String>| {
            if let Some(v) = v {
                values.push((key.to_owned(), v.clone()));
            }
        };
        push("data_dir", &self.data_dir);
        push("database.url", &self.database_url);
        push("api.listen", &self.api_listen);
        push("log.level", &self.log);
        Overrides { values }
    }
}

/// Exit code for a configuration error.
const EXIT_CONFIG: u8 = 2;

/// Parse the command line, run, and map the outcome to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.common.config.as_deref(), &cli.common.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("voxgate: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::CheckConfig = command {
        // The files named must also be what they say (PEM certificates and keys).
        if let Err(e) = crate::sip::tls::check(&config.sip) {
            eprintln!("voxgate: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        println!("voxgate: config OK");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = crate::logging::init(&config.log) {
        eprintln!("voxgate: cannot set up logging: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("voxgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Migrate => crate::app::migrate(&config).await,
            Command::Serve | Command::CheckConfig => crate::app::serve(config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("voxgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
