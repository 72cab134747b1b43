//! The `handoff` binary: sets up logging and hands the arguments to [`handoff::cli`].

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let filter = EnvFilter::try_from_env("HANDOFF_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,handoff=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    Ok(ExitCode::from(handoff::cli::main().await))
}
