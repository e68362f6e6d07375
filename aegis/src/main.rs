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
    /// Run the fleet core's API.
    #[cfg(feature = "core")]
    Core {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    aegis_base::init_tracing();
    let result = match Cli::parse().command {
        #[cfg(feature = "edge")]
        Command::Edge(command) => edge::run(command),
        #[cfg(feature = "core")]
        Command::Core { listen } => serve_core(listen).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

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
fn serve_core(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = bind(listen).await?;
        let shutdown = Shutdown::new();
        stop_on_signal(shutdown.clone())?;
        aegis_fleet::serve(listener, shutdown).await?;
        anyhow::Ok(())
    })
}
