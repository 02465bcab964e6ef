//! ICMP engine benchmark on loopback, side by side with fping and iputils ping in the same run.
//!
//! ```text
//! cargo run --release -p probe --example icmp_bench -- [--targets 10000] [--count 5] [--period-ms 10]
//!     [--paced 1000] [--interval-ms 2] [--per-tick 1] [--threads 0] [--no-compare]
//! ```
//! * burst: one probe per target (127.0.0.1 … 127.0.x.y, 250 per /24), all at once, each `count`
//!   echoes `period-ms` apart — the load of `fping -c COUNT -q -i 0 -p PERIOD -f targets.txt`.
//!   Reports echoes per second (sent / wall time) and CPU µs per echo (getrusage user+sys of this
//!   process, which on loopback includes the kernel generating the replies).
//! * paced: `paced` ticks `interval-ms` apart, each starting `per-tick` single-echo probes
//!   (127.0.0.1, .2, …) — with the defaults the cadence of `ping -c 1000 -i 0.002 127.0.0.1`.
//!   Reports CPU µs per probe and the RTT distribution.
//!
//! `--threads 0` (default) uses a current-thread runtime (fping and ping are single-threaded too).
//! Needs root (or a ping group range admitting it) and only ever sends to 127.0.0.0/8. fping's and
//! ping's peak RSS come from `/usr/bin/time -f %M` (getrusage of a forked child counts the parent's
//! pages it inherited).
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

#[derive(Clone)]
struct Args {
    targets: usize,
    count: u16,
    period_ms: u64,
    paced: usize,
    interval_ms: u64,
    per_tick: usize,
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
        per_tick: 1,
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
            "--per-tick" => a.per_tick = num() as usize,
            "--threads" => a.threads = num() as usize,
            "--no-compare" => a.compare = false,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        a.targets <= 250 * 256 && a.per_tick <= 250 * 256,
        "at most 64000 loopback targets"
    );
    a
}

/// CPU time of this process or of its waited-for children.
#[derive(Clone, Copy)]
struct Cpu {
    user: Duration,
    sys: Duration,
}

impl Cpu {
    fn now(who: UsageWho) -> Cpu {
        let u = getrusage(who).expect("getrusage");
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        Cpu {
            user: tv(u.user_time()),
            sys: tv(u.system_time()),
        }
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
        }
    }

    /// "CPU 0.423 s (user 0.100 + sys 0.323) = 8.46 us/UNIT"
    fn per(self, n: u64, unit: &str) -> String {
        let total = (self.user + self.sys).as_secs_f64();
        format!(
            "CPU {total:.3} s (user {:.3} + sys {:.3}) = {:.2} us/{unit}",
            self.user.as_secs_f64(),
            self.sys.as_secs_f64(),
            total * 1e6 / n.max(1) as f64
        )
    }
}

/// Peak RSS of this process so far, KiB (`VmHWM`).
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    hwm.and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
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

/// "min 5.0 p50 10.4 p90 12.9 p99 17.7 max 33.1 us" from seconds.
fn distribution(sorted: &[f64]) -> String {
    let us = |p| percentile(sorted, p) * 1e6;
    format!(
        "min {:.1} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} us",
        us(0.0),
        us(0.5),
        us(0.9),
        us(0.99),
        us(1.0)
    )
}

fn prober(engine: &Arc<IcmpEngine>, host: String, count: u16, interval: Duration) -> IcmpProber {
    let mut cfg = IcmpConfig::new(host);
    cfg.count = count;
    cfg.interval = HumanDuration(interval);
    IcmpProber::new(cfg, engine.clone()).unwrap()
}

/// Runs probes as tasks (as the daemon's scheduler does) and collects sent, received and RTTs.
async fn run_all(probers: Vec<IcmpProber>, timeout: Duration) -> (u64, u64, Vec<f64>, u64) {
    let tasks: Vec<_> = probers
        .into_iter()
        .map(|p| tokio::spawn(async move { p.probe(timeout).await }))
        .collect();
    let (mut sent, mut received, mut rtts, mut kernel) = (0, 0, Vec::new(), 0);
    for t in tasks {
        if let Details::Icmp(d) = t.await.unwrap().details {
            sent += u64::from(d.sent);
            received += u64::from(d.received);
            kernel += u64::from(d.kernel_timestamps);
            rtts.extend(d.rtts.into_iter().flatten());
        }
    }
    (sent, received, rtts, kernel)
}

fn burst(rt: &tokio::runtime::Runtime, engine: &Arc<IcmpEngine>, a: &Args) {
    let period = Duration::from_millis(a.period_ms);
    let probers: Vec<IcmpProber> = (0..a.targets)
        .map(|i| prober(engine, target(i), a.count, period))
        .collect();
    let rss0 = peak_rss_kb();
    let cpu0 = Cpu::now(UsageWho::RUSAGE_SELF);
    let start = Instant::now();
    let (sent, received, mut rtts, _) = rt.block_on(run_all(probers, Duration::from_secs(5)));
    let wall = start.elapsed();
    let cpu = Cpu::now(UsageWho::RUSAGE_SELF).since(cpu0);
    rtts.sort_by(f64::total_cmp);
    println!(
        "\n## burst: {} targets x {} echoes, period {} ms",
        a.targets, a.count, a.period_ms
    );
    println!(
        "netprobe: sent {sent} received {received} in {:.3} s = {:.0} echoes/s; {}; RTT {}; peak RSS +{} KiB for {} probes in flight",
        wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64(),
        cpu.per(sent, "echo"),
        distribution(&rtts),
        peak_rss_kb().saturating_sub(rss0),
        a.targets,
    );
    if !a.compare {
        return;
    }
    let file = std::env::temp_dir().join(format!("icmp_bench_targets_{}.txt", std::process::id()));
    std::fs::write(
        &file,
        (0..a.targets).map(|i| target(i) + "\n").collect::<String>(),
    )
    .unwrap();
    let (count, period) = (a.count.to_string(), a.period_ms.to_string());
    let file_arg = file.to_string_lossy().into_owned();
    let (wall, cpu, rss, text) = run_child(&[
        "fping", "-c", &count, "-q", "-i", "0", "-p", &period, "-f", &file_arg,
    ]);
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
        "fping:    sent {fsent} received {frecv} in {:.3} s = {:.0} echoes/s; {}; per-target avg RTT p50 {:.1} us; peak RSS {rss} KiB",
        wall.as_secs_f64(),
        fsent as f64 / wall.as_secs_f64(),
        cpu.per(fsent, "echo"),
        percentile(&avgs, 0.5) * 1e6,
    );
}

fn paced(rt: &tokio::runtime::Runtime, engine: &Arc<IcmpEngine>, a: &Args) {
    let probers: Vec<Arc<IcmpProber>> = (0..a.per_tick)
        .map(|i| Arc::new(prober(engine, target(i), 1, Duration::ZERO)))
        .collect();
    let interval = Duration::from_millis(a.interval_ms);
    let ticks = a.paced;
    let cpu0 = Cpu::now(UsageWho::RUSAGE_SELF);
    let start = Instant::now();
    // Spawned, as the daemon's scheduler runs probes: block_on's own future is woken through an
    // eventfd write, a spawned task through the run queue.
    let (mut rtts, kernel) = rt.block_on(async move {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let (mut rtts, mut kernel) = (Vec::with_capacity(ticks * probers.len()), 0);
            for _ in 0..ticks {
                tick.tick().await;
                let batch: Vec<_> = probers
                    .iter()
                    .map(|p| {
                        let p = p.clone();
                        tokio::spawn(async move { p.probe(Duration::from_secs(1)).await })
                    })
                    .collect();
                for t in batch {
                    if let Details::Icmp(d) = t.await.unwrap().details {
                        rtts.extend(d.rtts.into_iter().flatten());
                        kernel += u64::from(d.kernel_timestamps);
                    }
                }
            }
            (rtts, kernel)
        })
        .await
        .unwrap()
    });
    let wall = start.elapsed();
    let cpu = Cpu::now(UsageWho::RUSAGE_SELF).since(cpu0);
    let probes = (ticks * a.per_tick) as u64;
    rtts.sort_by(f64::total_cmp);
    println!(
        "\n## paced: {ticks} ticks {} ms apart x {} single-echo probe(s) per tick",
        a.interval_ms, a.per_tick
    );
    println!(
        "netprobe: {} replies in {:.3} s (tick {:.3} ms); {}; RTT {}; kernel stamps on {kernel}/{probes} probes",
        rtts.len(),
        wall.as_secs_f64(),
        wall.as_secs_f64() * 1e3 / ticks as f64,
        cpu.per(probes, "probe"),
        distribution(&rtts),
    );
    if !a.compare || a.per_tick != 1 {
        return;
    }
    let interval = format!("{:.3}", a.interval_ms as f64 / 1e3);
    let (wall, cpu, rss, text) = run_child(&[
        "ping",
        "-c",
        &ticks.to_string(),
        "-i",
        &interval,
        "127.0.0.1",
    ]);
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").trim().parse::<f64>().ok())
        .map(|ms| ms / 1e3)
        .collect();
    times.sort_by(f64::total_cmp);
    let summary = text.lines().find(|l| l.starts_with("rtt ")).unwrap_or("");
    println!(
        "ping:     {} replies in {:.3} s; {}; RTT {}; peak RSS {rss} KiB; ping says: {summary}",
        times.len(),
        wall.as_secs_f64(),
        cpu.per(ticks as u64, "probe"),
        distribution(&times),
    );
}

/// Runs `argv` under `/usr/bin/time -f %M`; returns wall time, the children's CPU, peak RSS (KiB) and
/// the combined output.
fn run_child(argv: &[&str]) -> (Duration, Cpu, u64, String) {
    let before = Cpu::now(UsageWho::RUSAGE_CHILDREN);
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kb=%M"])
        .args(argv)
        .output()
        .expect("spawn");
    let wall = start.elapsed();
    let cpu = Cpu::now(UsageWho::RUSAGE_CHILDREN).since(before);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse().ok());
    (wall, cpu, rss.unwrap_or(0), text)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .unwrap_or("?");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "nproc {nproc}, CPU {}, kernel {}",
        model.trim_start_matches([' ', '\t', ':']),
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
    let runtime = if a.threads == 0 {
        "current-thread".to_string()
    } else {
        format!("{} workers", a.threads)
    };
    println!(
        "machine: {}\nengine: {} socket, runtime: {runtime}",
        machine(),
        mode.as_str()
    );
    // Warm-up: socket registration, receive task, the kernel's timestamping static key.
    rt.block_on(run_all(
        (0..20)
            .map(|_| prober(&engine, target(0), 1, Duration::ZERO))
            .collect(),
        Duration::from_secs(1),
    ));
    if a.targets > 0 {
        burst(&rt, &engine, &a);
    }
    if a.paced > 0 {
        paced(&rt, &engine, &a);
    }
    let s = engine.stats();
    println!(
        "\nengine counters: sent {} replies {} errors {} ignored {} in flight {}",
        s.sent, s.replies, s.errors, s.ignored, s.in_flight
    );
}
