//! The `handoff` binary: sets up logging and hands the arguments to [`handoff::cli`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use handoff::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("HANDOFF_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,handoff=info"));
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        // One object per line, with the run span's sync and run id on every line inside it.
        fmt.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        fmt.init();
    }
    Ok(ExitCode::from(handoff::cli::run(cli).await))
}
