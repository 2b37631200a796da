//! `trellis agent`: load the configuration, install logging, run until a
//! signal.

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentFlags, Config, LogSettings};

#[derive(Debug, Args)]
pub(crate) struct AgentCmd {
    #[command(flatten)]
    flags: AgentFlags,
}

impl AgentCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let config = Config::load(&self.flags)?;
        init_tracing(&config.log);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let shutdown = CancellationToken::new();
            // Install the handlers before anything starts, so a signal that
            // arrives right after the listeners are up is not lost.
            let signals = Signals::install()?;
            tokio::spawn(signals.cancel_on_first(shutdown.clone()));
            crate::agent::run(config, shutdown).await?;
            anyhow::Ok(())
        })
    }
}

/// SIGINT and SIGTERM, registered with the runtime.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Cancels `shutdown` on the first SIGINT or SIGTERM.
    async fn cancel_on_first(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        shutdown.cancel();
    }
}

fn init_tracing(log: &LogSettings) {
    let level = &log.level;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},openraft=warn")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
