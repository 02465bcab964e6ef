//! The `netprobe` command. Exit codes: 0 ok, 1 check failed, 2 usage or input error.

use std::process::ExitCode;

use clap::Parser;
use netprobe::cli::{Cli, Command, RulesCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    };
    netprobe::logging::init(cli.log.as_deref().unwrap_or(default_log), cli.log_json);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Run { worker_threads, .. } = &cli.command {
        builder.worker_threads(usize::from(*worker_threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netprobe: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run {
                config,
                listen,
                max_in_flight,
                worker_threads: _,
            } => netprobe::run::run(&config, listen, max_in_flight).await,
            Command::Validate { config, json } => netprobe::oneshot::validate(&config, json),
            Command::Check {
                target,
                count,
                timeout,
                conditions,
                insecure,
                json,
                diagnose,
            } => {
                let args = netprobe::oneshot::CheckArgs {
                    target,
                    count,
                    timeout: timeout.0,
                    conditions,
                    insecure,
                    json,
                    diagnose,
                };
                netprobe::oneshot::check(args).await
            }
            Command::Diagnose(args) => netprobe::diagnose::cli::run_diagnose(args).await,
            Command::Snapshot(args) => netprobe::diagnose::cli::run_snapshot(&args),
            Command::Trace(args) => netprobe::trace::run_trace(&args),
            Command::Firewall { command } => netprobe::firewall::cli::run_firewall(&command),
            Command::Isolate(args) => netprobe::isolate::run_isolate(args).await,
            Command::Release(args) => netprobe::isolate::run_release(args).await,
            Command::Sweep(args) => netprobe::sweep::run_sweep(args).await,
            Command::Rules {
                command:
                    RulesCommand::Check {
                        files,
                        restore,
                        json,
                    },
            } => netprobe::trace::run_rules_check(&files, restore, json),
        }
    });
    ExitCode::from(code)
}
