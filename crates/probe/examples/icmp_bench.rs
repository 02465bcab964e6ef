//! ICMP engine benchmark on loopback, side by side with fping and iputils ping in the same run.
//!
//! ```text
//! cargo run --release -p probe --example icmp_bench -- [--targets 10000] [--count 5] [--period-ms 10]
//!     [--paced 1000] [--interval-ms 2] [--threads 0] [--no-compare]
//! ```
//! * burst: one probe per target (127.0.0.1 … 127.0.x.y, 250 per /24), all at once, each `count` echoes
//!   `period-ms` apart — the same load as `fping -c COUNT -q -i 0 -p PERIOD -f targets.txt`. Reports
//!   echoes per second (sent / wall time) and CPU µs per echo (getrusage user+sys of this process,
//!   which on loopback includes the kernel generating the replies).
//! * paced: `paced` single-echo probes to 127.0.0.1, one every `interval-ms`, like
//!   `ping -c PACED -i 0.002 127.0.0.1`. Reports CPU µs per probe and the RTT median.
//!
//! `--threads 0` (default) runs a current-thread runtime (fping and ping are single-threaded too).
//! Needs root (or a ping group range admitting it) and only ever sends to 127.0.0.0/8.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on setup failure"
)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use probe::icmp::{IcmpConfig, IcmpEngine, IcmpProber};
use probe::resolve::Family;
use probe::{Details, HumanDuration};

struct Args {
    targets: usize,
    count: u16,
    period_ms: u64,
    paced: usize,
    interval_ms: u64,
    threads: usize,
    compare: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        targets: 10_000,
        count: 5,
        period_ms: 10,
        paced: 1000,
        interval_ms: 2,
        threads: 0,
        compare: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("flag needs a number")
        };
        match flag.as_str() {
            "--targets" => a.targets = num() as usize,
            "--count" => a.count = num() as u16,
            "--period-ms" => a.period_ms = num(),
            "--paced" => a.paced = num() as usize,
            "--interval-ms" => a.interval_ms = num(),
            "--threads" => a.threads = num() as usize,
            "--no-compare" => a.compare = false,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.targets <= 250 * 256, "at most 64000 loopback targets");
    a
}

/// CPU time (user + system) and peak RSS of this process or of its waited-for children.
#[derive(Clone, Copy)]
struct Cpu {
    total: Duration,
    max_rss_kb: i64,
}

fn cpu(who: UsageWho) -> Cpu {
    let u = getrusage(who).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    Cpu {
        total: tv(u.user_time()) + tv(u.system_time()),
        max_rss_kb: u.max_rss(),
    }
}

fn target(i: usize) -> String {
    format!("127.0.{}.{}", i / 250, i % 250 + 1)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(s: f64) -> String {
    format!("{:.1}", s * 1e6)
}

async fn burst(engine: &Arc<IcmpEngine>, a: &Args) -> (Duration, Duration, u64, u64, Vec<f64>) {
    let probers: Vec<IcmpProber> = (0..a.targets)
        .map(|i| {
            let mut cfg = IcmpConfig::new(target(i));
            cfg.count = a.count;
            cfg.interval = HumanDuration(Duration::from_millis(a.period_ms));
            IcmpProber::new(cfg, engine.clone()).unwrap()
        })
        .collect();
    let cpu0 = cpu(UsageWho::RUSAGE_SELF);
    let start = Instant::now();
    let tasks: Vec<_> = probers
        .into_iter()
        .map(|p| tokio::spawn(async move { p.probe(Duration::from_secs(5)).await }))
        .collect();
    let (mut sent, mut received, mut rtts) = (0u64, 0u64, Vec::new());
    for t in tasks {
        let o = t.await.unwrap();
        if let Details::Icmp(d) = o.details {
            sent += u64::from(d.sent);
            received += u64::from(d.received);
            rtts.extend(d.rtts.into_iter().flatten());
        }
    }
    let wall = start.elapsed();
    let cpu1 = cpu(UsageWho::RUSAGE_SELF);
    (wall, cpu1.total - cpu0.total, sent, received, rtts)
}

async fn paced(engine: &Arc<IcmpEngine>, a: &Args) -> (Duration, Duration, Vec<f64>, usize) {
    let p = IcmpProber::new(IcmpConfig::new("127.0.0.1"), engine.clone()).unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(a.interval_ms));
    let (mut rtts, mut kernel) = (Vec::with_capacity(a.paced), 0);
    let cpu0 = cpu(UsageWho::RUSAGE_SELF);
    let start = Instant::now();
    for _ in 0..a.paced {
        tick.tick().await;
        let o = p.probe(Duration::from_secs(1)).await;
        if let Details::Icmp(d) = o.details {
            rtts.extend(d.rtts.into_iter().flatten());
            kernel += usize::from(d.kernel_timestamps);
        }
    }
    let wall = start.elapsed();
    (
        wall,
        cpu(UsageWho::RUSAGE_SELF).total - cpu0.total,
        rtts,
        kernel,
    )
}

/// Runs a command to completion; returns wall time, the children's CPU delta and peak RSS, output.
fn run_child(cmd: &mut Command) -> (Duration, Cpu, String) {
    let before = cpu(UsageWho::RUSAGE_CHILDREN);
    let start = Instant::now();
    let out = cmd.output().expect("spawn");
    let wall = start.elapsed();
    let after = cpu(UsageWho::RUSAGE_CHILDREN);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        wall,
        Cpu {
            total: after.total - before.total,
            max_rss_kb: after.max_rss_kb,
        },
        text,
    )
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']))
        .unwrap_or("?");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "nproc {}, CPU {model}, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim()
    )
}

fn main() {
    let a = parse_args();
    let rt = if a.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()
            .unwrap()
    };
    let engine = Arc::new(IcmpEngine::new());
    let mode = engine.mode(Family::V4).expect("an ICMP socket");
    println!("machine: {}", machine());
    println!(
        "engine: {} socket, runtime: {}",
        mode.as_str(),
        if a.threads == 0 {
            "current-thread".to_string()
        } else {
            format!("{} workers", a.threads)
        }
    );
    // Warm-up: socket registration, receive task, timestamping static key.
    rt.block_on(async {
        let p = IcmpProber::new(IcmpConfig::new("127.0.0.1"), engine.clone()).unwrap();
        for _ in 0..20 {
            p.probe(Duration::from_secs(1)).await;
        }
    });
    let rss0 = cpu(UsageWho::RUSAGE_SELF).max_rss_kb;

    let (wall, used, sent, received, mut rtts) = rt.block_on(burst(&engine, &a));
    rtts.sort_by(f64::total_cmp);
    let rss1 = cpu(UsageWho::RUSAGE_SELF).max_rss_kb;
    println!(
        "\n## burst: {} targets x {} echoes, period {} ms\nnetprobe: sent {sent} received {received} in {:.3} s = {:.0} echoes/s; CPU {:.3} s = {:.2} us/echo; RTT p50 {} p99 {} us; peak RSS {} MB (+{} KB over warm-up)",
        a.targets,
        a.count,
        a.period_ms,
        wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64(),
        used.as_secs_f64(),
        used.as_secs_f64() * 1e6 / sent.max(1) as f64,
        us(percentile(&rtts, 0.5)),
        us(percentile(&rtts, 0.99)),
        rss1 / 1024,
        rss1 - rss0,
    );

    if a.compare {
        let file =
            std::env::temp_dir().join(format!("icmp_bench_targets_{}.txt", std::process::id()));
        let list: String = (0..a.targets).map(|i| target(i) + "\n").collect();
        std::fs::write(&file, list).unwrap();
        let mut cmd = Command::new("fping");
        cmd.args([
            "-c",
            &a.count.to_string(),
            "-q",
            "-i",
            "0",
            "-p",
            &a.period_ms.to_string(),
            "-f",
        ])
        .arg(&file);
        let (wall, c, text) = run_child(&mut cmd);
        let _ = std::fs::remove_file(&file);
        // "127.0.0.1 : xmt/rcv/%loss = 5/5/0%, min/avg/max = 0.004/0.005/0.007"
        let (mut fsent, mut frecv, mut avgs) = (0u64, 0u64, Vec::new());
        for l in text.lines() {
            if let Some(stats) = l.split("xmt/rcv/%loss = ").nth(1) {
                let mut f = stats.split(['/', ',']);
                fsent += f
                    .next()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                frecv += f
                    .next()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if let Some(mm) = l.split("min/avg/max = ").nth(1) {
                avgs.extend(
                    mm.split('/')
                        .nth(1)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|ms| ms / 1e3),
                );
            }
        }
        avgs.sort_by(f64::total_cmp);
        println!(
            "fping:    sent {fsent} received {frecv} in {:.3} s = {:.0} echoes/s; CPU {:.3} s = {:.2} us/echo; per-target avg RTT p50 {} us; peak RSS {} MB",
            wall.as_secs_f64(),
            fsent as f64 / wall.as_secs_f64(),
            c.total.as_secs_f64(),
            c.total.as_secs_f64() * 1e6 / fsent.max(1) as f64,
            us(percentile(&avgs, 0.5)),
            c.max_rss_kb / 1024,
        );
    }

    let (wall, used, mut rtts, kernel) = rt.block_on(paced(&engine, &a));
    rtts.sort_by(f64::total_cmp);
    println!(
        "\n## paced: {} probes (count 1) to 127.0.0.1 every {} ms\nnetprobe: {} replies in {:.3} s (cadence {:.3} ms); CPU {:.3} s = {:.2} us/probe; RTT min {} p50 {} p90 {} p99 {} max {} us; kernel stamps on {kernel}/{} probes",
        a.paced,
        a.interval_ms,
        rtts.len(),
        wall.as_secs_f64(),
        wall.as_secs_f64() * 1e3 / a.paced as f64,
        used.as_secs_f64(),
        used.as_secs_f64() * 1e6 / a.paced as f64,
        us(percentile(&rtts, 0.0)),
        us(percentile(&rtts, 0.5)),
        us(percentile(&rtts, 0.9)),
        us(percentile(&rtts, 0.99)),
        us(percentile(&rtts, 1.0)),
        a.paced,
    );
    if a.compare {
        let interval = format!("{:.3}", a.interval_ms as f64 / 1e3);
        let (wall, c, text) = run_child(Command::new("ping").args([
            "-c",
            &a.paced.to_string(),
            "-i",
            &interval,
            "127.0.0.1",
        ]));
        let mut times: Vec<f64> = text
            .lines()
            .filter_map(|l| l.split("time=").nth(1))
            .filter_map(|t| t.trim_end_matches(" ms").trim().parse::<f64>().ok())
            .map(|ms| ms / 1e3)
            .collect();
        times.sort_by(f64::total_cmp);
        let summary = text.lines().find(|l| l.starts_with("rtt ")).unwrap_or("");
        println!(
            "ping:     {} replies in {:.3} s; CPU {:.3} s = {:.2} us/probe; RTT min {} p50 {} p90 {} p99 {} max {} us; {summary}",
            times.len(),
            wall.as_secs_f64(),
            c.total.as_secs_f64(),
            c.total.as_secs_f64() * 1e6 / a.paced as f64,
            us(percentile(&times, 0.0)),
            us(percentile(&times, 0.5)),
            us(percentile(&times, 0.9)),
            us(percentile(&times, 0.99)),
            us(percentile(&times, 1.0)),
        );
    }
    let s = engine.stats();
    println!(
        "\nengine counters: sent {} replies {} errors {} ignored {} in flight {}",
        s.sent, s.replies, s.errors, s.ignored, s.in_flight
    );
}
