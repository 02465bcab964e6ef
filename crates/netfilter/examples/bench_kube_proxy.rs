//! Parse and trace timings on a generated kube-proxy ruleset (issue 3 "Performance"):
//! `cargo run --release -p netfilter --features gen --example bench_kube_proxy -- [SERVICES] [ENDPOINTS]`.
//!
//! Prints the rule count, the median parse time over 9 runs, the median time of one `trace` of a
//! ClusterIP flow (all its statistic branches) and of a flow that matches no Service over 201
//! runs each, and the peak resident set (`VmHWM` of `/proc/self/status`) of a fresh process that
//! reads the generated text from a file and does all of that.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: any failure is fatal"
)]
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use netfilter::eval::{Flow, HostModel, Origin, trace};
use netfilter::generate::kube_proxy::{KubeProxyConfig, NODE_ADDR, kube_proxy_text, service_addr};
use netfilter::{ParseOptions, parse_save};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path, services] = args.as_slice()
        && flag == "--file"
    {
        let text = std::fs::read_to_string(path).expect("read the generated ruleset");
        let services = services.parse().expect("service count");
        measure(&text, services);
        return;
    }
    let services = args.first().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let endpoints = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let cfg = KubeProxyConfig::new(services, endpoints);
    let t = Instant::now();
    let text = kube_proxy_text(&cfg);
    println!(
        "generated {services} services x {endpoints} endpoints: {} bytes in {:?}",
        text.len(),
        t.elapsed()
    );
    // Measure in a fresh process, so the peak RSS is that of reading and parsing the file (as
    // `netprobe trace --rules FILE` does), not the generator's.
    let path = std::env::temp_dir().join(format!("bench-kube-proxy-{}.txt", std::process::id()));
    std::fs::write(&path, &text).expect("write the generated ruleset");
    drop(text);
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--file")
        .arg(&path)
        .arg(services.to_string())
        .status();
    let _ = std::fs::remove_file(&path);
    assert!(status.expect("run the measuring process").success());
}

fn measure(text: &str, services: usize) {
    let opts = ParseOptions::default();
    let mut times = Vec::new();
    let mut rs = None;
    for _ in 0..9 {
        drop(rs.take());
        let t = Instant::now();
        rs = Some(parse_save(text, &opts).expect("generated text parses"));
        times.push(t.elapsed());
    }
    let rs = rs.expect("parsed at least once");
    println!("rules: {}", rs.rule_count());
    println!(
        "parse: median {:?} of 9 (first, into fresh memory: {:?}; min {:?})",
        median(times.clone()),
        times[0],
        times.iter().min().unwrap()
    );
    let rulesets = [rs];
    let host = HostModel::default().with_addr("eth0", IpAddr::V4(NODE_ADDR), 24);
    let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77));
    // The Service in the middle of KUBE-SERVICES, and a VIP port no Service uses.
    let (vip, port) = service_addr(services / 2);
    let hit = Flow::tcp(Origin::Forward, client, IpAddr::V4(vip), port);
    let miss = Flow::tcp(Origin::Forward, client, IpAddr::V4(vip), 999);
    for (what, flow) in [
        ("ClusterIP flow", &hit),
        ("flow matching no Service", &miss),
    ] {
        let traces = trace(&rulesets, &host, flow);
        let steps: usize = traces.branches.iter().map(|t| t.steps.len()).sum();
        let mut times = Vec::new();
        for _ in 0..201 {
            let t = Instant::now();
            let tr = trace(&rulesets, &host, flow);
            times.push(t.elapsed());
            std::hint::black_box(tr);
        }
        println!(
            "trace {what}: median {:?} of 201 (min {:?}); verdict {}, {} branches, {steps} steps, nat {:?}",
            median(times.clone()),
            times.iter().min().unwrap(),
            traces.verdict().as_str(),
            traces.branches.len(),
            traces
                .branches
                .first()
                .map(|t| t.nat.iter().map(|n| n.to).collect::<Vec<_>>()),
        );
    }
    match vm_hwm_kib() {
        Some(k) => println!(
            "peak RSS (VmHWM; the text, one parsed ruleset at a time, the traces): {:.1} MB",
            k as f64 / 1024.0
        ),
        None => println!("peak RSS: /proc/self/status not readable"),
    }
}
