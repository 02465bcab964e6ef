//! `netprobe sweep`: an fping-style one-shot ICMP sweep over many hosts on the shared ICMP engine.
//!
//! Targets are IP addresses or CIDR prefixes (from the command line, or one per line from
//! `--targets FILE`, `#` comments allowed); an IPv4 prefix shorter than /31 skips its network and
//! broadcast addresses, as fping `-g` does. Each host gets `--count` echoes `--interval` apart;
//! hosts are started [`START_GAP`] apart with at most [`MAX_CONCURRENT`] in flight, so a sweep of
//! 10,000 hosts is a steady stream, not a burst. Exit codes: 0 every host answered at least once,
//! 1 some host did not answer, 2 usage or input error (bad target, too many hosts, no ICMP socket).

use std::io::{IsTerminal as _, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use probe::icmp::{IcmpConfig, IcmpEngine, IcmpProber};
use probe::resolve::Family;
use probe::{Details, HumanDuration};
use serde::Serialize;

use crate::oneshot::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// The most hosts one sweep accepts (a /16 of IPv4 plus change).
pub const MAX_HOSTS: usize = 1 << 20;
/// Hosts probed at once.
pub const MAX_CONCURRENT: usize = 2048;
/// Gap between the starts of two hosts' probes (fping's default `-i` is 10 ms per packet; the
/// engine's single socket allows much less).
pub const START_GAP: Duration = Duration::from_micros(100);

/// Arguments of `netprobe sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// IP addresses or CIDR prefixes (e.g. `198.51.100.0/24`, `fd00::1`).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Read targets from FILE, one per line (`#` starts a comment).
    #[arg(long = "targets", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Echoes per host (1–100).
    #[arg(long, default_value_t = 1)]
    pub count: u16,
    /// Time between two echoes to one host.
    #[arg(long, default_value = "1s", value_parser = HumanDuration::parse)]
    pub interval: HumanDuration,
    /// How long to wait for the last echo's reply.
    #[arg(long, default_value = "1s", value_parser = HumanDuration::parse)]
    pub timeout: HumanDuration,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One host's result. RTTs in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    /// The address.
    pub host: IpAddr,
    /// Echoes sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// `1 - received/sent`.
    pub loss_ratio: f64,
    /// Smallest RTT.
    pub rtt_min: Option<f64>,
    /// Mean RTT.
    pub rtt_avg: Option<f64>,
    /// Largest RTT.
    pub rtt_max: Option<f64>,
    /// Why replies are missing (`timeout`, `host-unreachable`, …).
    pub reason: Option<String>,
}

/// Expands one target (address or CIDR) into `out`; errors say what was expected.
pub fn expand(target: &str, out: &mut Vec<IpAddr>) -> Result<(), String> {
    let t = target.trim();
    let Some((addr, len)) = t.split_once('/') else {
        let ip: IpAddr = t.parse().map_err(|_| {
            format!(
                "invalid target {t:?}; expected an IP address or a CIDR prefix like 198.51.100.0/24"
            )
        })?;
        out.push(ip.to_canonical());
        return push_checked(out);
    };
    let ip: IpAddr = addr.parse().map_err(|_| {
        format!("invalid prefix {t:?}; expected like 198.51.100.0/24 or fd00::/120")
    })?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("invalid prefix length in {t:?}"))?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    if len > bits {
        return Err(format!("prefix length {len} of {t:?} exceeds {bits}"));
    }
    let host_bits = bits - len;
    if host_bits > 20 {
        return Err(format!(
            "prefix {t:?} holds more than {MAX_HOSTS} addresses; expected /12 or longer for IPv4, /108 or longer for IPv6"
        ));
    }
    let size: u128 = 1 << host_bits;
    let base: u128 = match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    } & !(size - 1);
    // fping -g skips the network and broadcast addresses of IPv4 prefixes shorter than /31.
    let (first, last) = if ip.is_ipv4() && host_bits >= 2 {
        (1, size - 2)
    } else {
        (0, size - 1)
    };
    for i in first..=last {
        let v = base + i;
        let addr = match ip {
            IpAddr::V4(_) => IpAddr::from(u32::try_from(v).unwrap_or(0).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(v.to_be_bytes()),
        };
        out.push(addr);
        push_checked(out)?;
    }
    Ok(())
}

fn push_checked(out: &[IpAddr]) -> Result<(), String> {
    if out.len() > MAX_HOSTS {
        return Err(format!(
            "more than {MAX_HOSTS} hosts; sweep fewer at a time"
        ));
    }
    Ok(())
}

/// Reads every target of `args`.
pub fn targets(args: &SweepArgs) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    if let Some(f) = &args.file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                expand(line, &mut out).map_err(|e| format!("{}:{}: {e}", f.display(), n + 1))?;
            }
        }
    }
    for t in &args.targets {
        expand(t, &mut out)?;
    }
    if out.is_empty() {
        return Err("no targets; give addresses, CIDR prefixes or --targets FILE".to_owned());
    }
    Ok(out)
}

/// Probes every host and collects the results in input order.
pub async fn sweep(
    hosts: &[IpAddr],
    count: u16,
    interval: Duration,
    timeout: Duration,
    engine: &Arc<IcmpEngine>,
    done: &AtomicUsize,
) -> Vec<HostResult> {
    let budget = interval * u32::from(count.saturating_sub(1)) + timeout;
    let start = tokio::time::Instant::now();
    let stream = futures::stream::iter(hosts.iter().enumerate()).map(|(i, &host)| {
        let engine = Arc::clone(engine);
        async move {
            let gap = START_GAP * u32::try_from(i).unwrap_or(u32::MAX);
            tokio::time::sleep_until(start + gap).await;
            let r = probe_host(host, count, interval, budget, engine).await;
            done.fetch_add(1, Ordering::Relaxed);
            r
        }
    });
    stream.buffered(MAX_CONCURRENT).collect().await
}

async fn probe_host(
    host: IpAddr,
    count: u16,
    interval: Duration,
    budget: Duration,
    engine: Arc<IcmpEngine>,
) -> HostResult {
    let mut r = HostResult {
        host,
        sent: 0,
        received: 0,
        loss_ratio: 1.0,
        rtt_min: None,
        rtt_avg: None,
        rtt_max: None,
        reason: None,
    };
    let cfg = IcmpConfig {
        count,
        interval: HumanDuration(interval),
        ..IcmpConfig::new(host.to_string())
    };
    let prober = match IcmpProber::new(cfg, engine) {
        Ok(p) => p,
        Err(e) => {
            r.reason = Some(e.to_string());
            return r;
        }
    };
    let o = prober.probe(budget).await;
    if let Details::Icmp(d) = &o.details {
        r.sent = d.sent;
        r.received = d.received;
        r.loss_ratio = if d.sent == 0 { 1.0 } else { d.loss_ratio };
        r.rtt_min = d.rtt_min;
        r.rtt_avg = d.rtt_avg;
        r.rtt_max = d.rtt_max;
    }
    if r.received < r.sent || r.sent == 0 {
        r.reason = Some(o.reason.map_or("timeout", |x| x.as_str()).to_owned());
    }
    r
}

/// `netprobe sweep`: returns the exit code.
pub async fn run_sweep(args: SweepArgs) -> u8 {
    if !(1..=probe::icmp::MAX_COUNT).contains(&args.count) {
        eprintln!(
            "netprobe sweep: --count {} is out of range; expected 1 to {}",
            args.count,
            probe::icmp::MAX_COUNT
        );
        return EXIT_USAGE;
    }
    if args.interval.0.is_zero() || args.interval.0 > probe::icmp::MAX_INTERVAL {
        eprintln!("netprobe sweep: --interval must be greater than zero and at most 10s");
        return EXIT_USAGE;
    }
    let hosts = match targets(&args) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("netprobe sweep: {e}");
            return EXIT_USAGE;
        }
    };
    let engine = Arc::new(IcmpEngine::new());
    for fam in [Family::V4, Family::V6] {
        let wanted = hosts.iter().any(|h| h.is_ipv4() == (fam == Family::V4));
        if wanted && let Err(e) = engine.mode(fam) {
            eprintln!("netprobe sweep: {e}");
            return EXIT_USAGE;
        }
    }
    let done = Arc::new(AtomicUsize::new(0));
    let progress = std::io::stderr().is_terminal().then(|| {
        let (done, total) = (Arc::clone(&done), hosts.len());
        tokio::spawn(async move {
            loop {
                let n = done.load(Ordering::Relaxed);
                eprint!("\r[{:<30}] {n}/{total}", "#".repeat(n * 30 / total.max(1)));
                let _ = std::io::stderr().flush();
                if n >= total {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let results = sweep(
        &hosts,
        args.count,
        args.interval.0,
        args.timeout.0,
        &engine,
        &done,
    )
    .await;
    if let Some(p) = progress {
        let _ = p.await;
        eprintln!();
    }
    let all_up = results.iter().all(|r| r.received > 0);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&results).unwrap_or_else(|_| "[]".to_owned())
        );
    } else {
        let mut out = std::io::stdout().lock();
        for r in &results {
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.3}", s * 1e3));
            let _ = writeln!(
                out,
                "{:<39} : xmt/rcv/%loss = {}/{}/{:.0}%{}{}",
                r.host,
                r.sent,
                r.received,
                r.loss_ratio * 100.0,
                if r.received > 0 {
                    format!(
                        ", min/avg/max = {}/{}/{} ms",
                        ms(r.rtt_min),
                        ms(r.rtt_avg),
                        ms(r.rtt_max)
                    )
                } else {
                    String::new()
                },
                r.reason
                    .as_deref()
                    .map_or(String::new(), |x| format!(" ({x})")),
            );
        }
        let up = results.iter().filter(|r| r.received > 0).count();
        let _ = writeln!(out, "{up}/{} hosts answered", results.len());
    }
    if all_up { EXIT_OK } else { EXIT_FAILED }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    #[test]
    fn expands_prefixes_like_fping() {
        let mut v = Vec::new();
        expand("198.51.100.0/30", &mut v).unwrap();
        assert_eq!(
            v,
            vec![
                "198.51.100.1".parse::<IpAddr>().unwrap(),
                "198.51.100.2".parse().unwrap()
            ]
        );
        v.clear();
        expand("198.51.100.7/31", &mut v).unwrap();
        assert_eq!(v.len(), 2);
        v.clear();
        expand("fd00::/126", &mut v).unwrap();
        assert_eq!(v.len(), 4);
        v.clear();
        expand("192.0.2.9", &mut v).unwrap();
        assert_eq!(v.len(), 1);
        assert!(expand("10.0.0.0/8", &mut v).is_err());
        assert!(expand("fd00::/64", &mut v).is_err());
        assert!(expand("nonsense", &mut v).is_err());
        assert!(expand("192.0.2.0/33", &mut v).is_err());
    }
}
