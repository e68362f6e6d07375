//! `aegis`: one binary, two roles chosen by Cargo features of the same crates: `edge`, the
//! appliance (default), and `core`, the fleet core. Thin: each sub-command parses its arguments
//! and calls a library.

#[cfg(not(any(feature = "edge", feature = "core")))]
compile_error!("build aegis with the `edge` feature, the `core` feature, or both");

use std::process::ExitCode;

use aegis_base::Shutdown;
use clap::{Parser, Subcommand};

#[cfg(feature = "edge")]
mod bench;
#[cfg(feature = "edge")]
mod edge;

#[derive(Parser)]
#[command(name = "aegis", version, about = "AegisVision edge video analytics")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[cfg(feature = "edge")]
    #[command(flatten)]
    Edge(edge::Command),
    /// Run the fleet core: the NATS hub, event ingest and the API.
    #[cfg(feature = "core")]
    Core {
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    aegis_base::init_tracing();
    let result = match Cli::parse().command {
        #[cfg(feature = "edge")]
        Command::Edge(command) => edge::run(command),
        #[cfg(feature = "core")]
        Command::Core { config } => serve_core(&config),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Exit status for a bad config or bad arguments (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// Triggers `shutdown` on Ctrl-C or SIGTERM. Call inside a Tokio runtime.
fn stop_on_signal(shutdown: Shutdown) -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        shutdown.trigger();
        tracing::info!("shutting down");
    });
    Ok(())
}

/// Binds `addr`, with an error that names it.
async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    Ok(listener)
}

#[cfg(feature = "core")]
fn serve_core(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match aegis_fleet::CoreConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = bind(config.listen).await?;
        let shutdown = Shutdown::new();
        stop_on_signal(shutdown.clone())?;
        let core = aegis_fleet::Core::start(&config, shutdown.clone()).await?;
        let served = aegis_fleet::serve(listener, core.state.clone(), shutdown.clone()).await;
        shutdown.trigger();
        core.stop().await;
        served?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
