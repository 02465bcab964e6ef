//! `netprobe run`: the daemon. Wires config → probers → scheduler → store/metrics, the automatic
//! diagnosis of checks that turn unhealthy ([`crate::autodiag`]), and serves the API.
//!
//! Shutdown (SIGTERM or Ctrl-C): stop probing (in-flight probes are abandoned), flush the store's write
//! queue, close the database, exit 0.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use probe::icmp::IcmpEngine;
use store::{SqliteStore, Store, Writer, WriterHandle, WriterOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::autodiag::AutoDiagnoser;
use crate::check::{CheckRuntime, CheckSpec, UnhealthyHook, WallClock};
use crate::config::{self, Config, ProbeSpec};
use crate::metrics::Metrics;
use crate::oneshot::{EXIT_OK, EXIT_USAGE};
use crate::scheduler::{self, SchedulerOptions};
use crate::server::{self, AppState};

/// Process-level knobs of the daemon (CLI flags, not config).
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonOptions {
    /// Overrides `server.listen`.
    pub listen: Option<SocketAddr>,
    /// Scheduler tuning.
    pub scheduler: SchedulerOptions,
}

/// A running daemon.
pub struct Daemon {
    /// The address the HTTP server is bound to.
    pub addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
    server: tokio::task::JoinHandle<()>,
    writer: WriterHandle,
    store: Arc<dyn Store>,
    state: Arc<AppState>,
}

impl Daemon {
    /// Opens the store, builds every prober, binds the server and starts the scheduler.
    ///
    /// Errors: the store cannot be opened, a prober cannot be built, or the listen address cannot be bound.
    pub async fn start(cfg: Config, opts: DaemonOptions) -> anyhow::Result<Daemon> {
        let sqlite = SqliteStore::open(&cfg.storage.path)
            .await
            .with_context(|| format!("cannot open the store at {}", cfg.storage.path.display()))?;
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let writer = Writer::spawn(Arc::clone(&store), WriterOptions::default());
        let metrics = Arc::new(Metrics::new());
        let engine = Arc::new(IcmpEngine::new());
        let clock = WallClock::new();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let diagnoser: Option<Arc<dyn UnhealthyHook>> = if cfg.diagnosis.enabled {
            let d = AutoDiagnoser::new(
                &cfg.diagnosis,
                Arc::clone(&store),
                Arc::clone(&metrics),
                tracker.clone(),
                cancel.clone(),
            )
            .context("automatic diagnosis")?;
            Some(d)
        } else {
            None
        };

        let mut checks = Vec::with_capacity(cfg.checks.len());
        for c in &cfg.checks {
            let prober = c
                .spec
                .build(&engine)
                .with_context(|| format!("check {:?}", c.name))?;
            let spec = CheckSpec {
                name: c.name.clone(),
                kind: prober.kind(),
                target: prober.target(),
                runner: scheduler::runner(prober),
                period: c.period,
                timeout: c.timeout,
                initial_delay: c.initial_delay,
                success_threshold: c.success_threshold,
                failure_threshold: c.failure_threshold,
                conditions: c.conditions.clone(),
            };
            let mut runtime = CheckRuntime::new(spec, &metrics, clock);
            if let Some(hook) = &diagnoser {
                runtime = runtime.with_unhealthy_hook(Arc::clone(hook));
            }
            checks.push(Arc::new(runtime));
        }
        report_icmp_modes(&cfg, &engine, &metrics);

        let stats = writer.stats();
        let before_scrape: server::ScrapeHook = Box::new(move |m: &Metrics| {
            use std::sync::atomic::Ordering::Relaxed;
            let snap = stats.snapshot();
            m.store_written.inner().store(snap.written(), Relaxed);
            m.store_dropped.inner().store(snap.dropped(), Relaxed);
            m.store_failures.inner().store(snap.failures, Relaxed);
        });
        let mut app_state = AppState::new(
            checks.clone(),
            Arc::clone(&store),
            Arc::clone(&metrics),
            Some(before_scrape),
        )
        .with_diagnosis(cfg.diagnosis.enabled);
        if let Some(mesh) = &cfg.mesh {
            app_state = app_state.with_mesh(crate::mesh::start(
                mesh.clone(),
                Arc::clone(&engine),
                Arc::clone(&metrics),
                Some(Arc::clone(&store)),
                diagnoser.clone(),
                &tracker,
                cancel.clone(),
            ));
        }
        let state = Arc::new(app_state);
        let listen = opts.listen.unwrap_or(cfg.server.listen);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr().context("listener address")?;
        let app = server::router(Arc::clone(&state));
        let server_cancel = cancel.clone();
        let server = tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(server_cancel.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed.");
            }
        });

        let recorder: Arc<dyn crate::check::Recorder> = Arc::new(writer.clone());
        scheduler::start(
            &checks,
            recorder,
            Arc::clone(&metrics),
            opts.scheduler,
            cancel.clone(),
            &tracker,
        );
        tracker.spawn(store::spawn_pruner(
            Arc::clone(&store),
            cfg.storage.retention,
            Duration::from_secs(60),
            cancel.clone(),
        ));
        tracker.close();
        state.set_ready(true);
        tracing::info!(%addr, checks = checks.len(), store = %cfg.storage.path.display(), "netprobe running.");
        Ok(Daemon {
            addr,
            cancel,
            tracker,
            server,
            writer,
            store,
            state,
        })
    }

    /// Stops probing, flushes the store and stops the server.
    pub async fn stop(self) {
        self.state.set_ready(false);
        self.cancel.cancel();
        self.tracker.wait().await;
        self.writer.shutdown().await;
        self.store.close().await;
        let _ = self.server.await;
        tracing::info!("netprobe stopped.");
    }
}

fn report_icmp_modes(cfg: &Config, engine: &IcmpEngine, metrics: &Metrics) {
    if !cfg
        .checks
        .iter()
        .any(|c| matches!(c.spec, ProbeSpec::Icmp(_)))
    {
        return;
    }
    for (family, name) in [
        (probe::resolve::Family::V4, "ipv4"),
        (probe::resolve::Family::V6, "ipv6"),
    ] {
        match engine.mode(family) {
            // The engine logs the mode it opened; here it only becomes a metric.
            Ok(mode) => metrics.set_icmp_mode(name, mode),
            Err(e) => {
                tracing::warn!(family = name, error = %e, "ICMP unavailable; ICMP checks will fail with permission-denied.")
            }
        }
    }
}

/// Runs the daemon until SIGTERM/Ctrl-C; returns the exit code (0, or 2 when it cannot start).
pub async fn run(path: &Path, listen: Option<SocketAddr>, max_in_flight: usize) -> u8 {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let opts = DaemonOptions {
        listen,
        scheduler: SchedulerOptions {
            max_in_flight,
            spread: true,
        },
    };
    let daemon = match Daemon::start(cfg, opts).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("netprobe run: {e:#}");
            return EXIT_USAGE;
        }
    };
    shutdown_signal().await;
    tracing::info!("Shutting down.");
    daemon.stop().await;
    EXIT_OK
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot watch SIGTERM; only Ctrl-C stops netprobe.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
