use tracing_subscriber::EnvFilter;

/// Installs the process-wide `tracing` subscriber; `RUST_LOG` overrides the default `info`.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second call (tests) keeps the first subscriber. With stderr gone (a closed pipe), log
    // lines are lost quietly: reporting that failure would `eprintln!`, which panics, and a
    // panic in the thread that logged would take its work (shutdown, a camera) with it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .try_init();
}
