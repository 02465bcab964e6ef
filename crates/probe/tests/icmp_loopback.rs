//! ICMP engine and prober against the host's loopback (127.0.0.0/8 and ::1).
//!
//! Run as root in the host namespace, where `net.ipv4.ping_group_range` is normally `1 0`, the engine
//! uses raw sockets; datagram sockets, firewalls and unprivileged users are covered by the
//! network-namespace tests in `lab_icmp.rs`.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use probe::icmp::{IcmpConfig, IcmpEngine, IcmpProber, IcmpRounds, IpFamily};
use probe::resolve::Family;
use probe::{Details, HumanDuration, IcmpDetails, Outcome, Phase, Reason};

const TIMEOUT: Duration = Duration::from_secs(5);

fn icmp(o: &Outcome) -> &IcmpDetails {
    match &o.details {
        Details::Icmp(d) => d,
        other => panic!("not ICMP details: {other:?}"),
    }
}

fn prober(engine: &Arc<IcmpEngine>, host: &str, count: u16, interval_ms: u64) -> IcmpProber {
    let mut cfg = IcmpConfig::new(host);
    cfg.count = count;
    cfg.interval = HumanDuration(Duration::from_millis(interval_ms));
    IcmpProber::new(cfg, engine.clone()).unwrap()
}

/// Every echo answered, with sane RTTs (loopback: above zero, far below a second).
fn assert_all_answered(o: &Outcome, addr: &str, count: u32) {
    assert!(o.success, "{o:?}");
    assert_eq!(o.reason, None);
    let d = icmp(o);
    assert_eq!(d.address, Some(addr.parse::<IpAddr>().unwrap()));
    assert!(d.mode.is_some());
    assert_eq!(
        (d.sent, d.received, d.loss_ratio),
        (count, count, 0.0),
        "{o:?}"
    );
    assert_eq!(d.rtts.len(), count as usize);
    for rtt in &d.rtts {
        let rtt = rtt.unwrap_or_else(|| panic!("lost echo in {o:?}"));
        assert!(rtt > 0.0 && rtt < 1.0, "rtt {rtt} s in {o:?}");
    }
    let (min, avg, max) = (d.rtt_min.unwrap(), d.rtt_avg.unwrap(), d.rtt_max.unwrap());
    assert!(
        min <= avg && avg <= max && d.rtt_stddev.unwrap() >= 0.0,
        "{d:?}"
    );
    assert_eq!(o.phase(Phase::Rtt), Some(Duration::from_secs_f64(avg)));
    assert!(o.phase(Phase::Resolve).is_some() && o.phase(Phase::Setup).is_some());
    assert!(o.duration < TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_ipv4_loopback() {
    let engine = Arc::new(IcmpEngine::new());
    assert!(engine.opened().is_empty(), "sockets open lazily");
    let p = prober(&engine, "127.0.0.1", 3, 10);
    assert_eq!(p.target(), "icmp://127.0.0.1");
    let o = p.probe(TIMEOUT).await;
    assert_all_answered(&o, "127.0.0.1", 3);
    assert!(
        o.message.starts_with("3/3 replies from 127.0.0.1"),
        "{}",
        o.message
    );
    let mode = engine.mode(Family::V4).unwrap();
    assert_eq!(icmp(&o).mode, Some(mode));
    assert_eq!(engine.opened(), vec![(Family::V4, mode)]);
    let stats = engine.stats();
    assert_eq!((stats.sent, stats.replies, stats.in_flight), (3, 3, 0));

    // The kernel enables receive timestamps asynchronously after the first socket asks for them
    // (performance-anchors §4.1); once on, every RTT comes from SO_TIMESTAMPNS.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let o = p.probe(TIMEOUT).await;
    assert_all_answered(&o, "127.0.0.1", 3);
    assert!(icmp(&o).kernel_timestamps, "{o:?}");
    eprintln!("{}", o.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_ipv6_loopback() {
    let lo = std::fs::read_to_string("/proc/net/if_inet6").unwrap();
    assert!(
        lo.lines()
            .any(|l| l.starts_with("00000000000000000000000000000001")),
        "this test needs ::1 on lo (IPv6 enabled): {lo}"
    );
    let engine = Arc::new(IcmpEngine::new());
    let p = prober(&engine, "[::1]", 3, 10);
    assert_eq!(p.target(), "icmp://[::1]");
    let o = p.probe(TIMEOUT).await;
    assert_all_answered(&o, "::1", 3);
    assert_eq!(engine.opened().first().map(|(f, _)| *f), Some(Family::V6));
}

/// Probes through the rounds driver keep their schedule: echoes due from the given instant (a start
/// in time keeps it, a late start is re-timed from now instead of bursting the overdue echoes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_keep_their_schedule_unless_late() {
    let engine = Arc::new(IcmpEngine::new());
    let rounds = IcmpRounds::new();
    let p = prober(&engine, "127.0.0.1", 3, 100);
    // Due 150 ms from now: the last echo (at +200 ms) goes out ~350 ms from now.
    let t0 = Instant::now();
    let first = tokio::time::Instant::now() + Duration::from_millis(150);
    let o = rounds.probe(&p, first, TIMEOUT).await;
    assert_all_answered(&o, "127.0.0.1", 3);
    assert!(
        t0.elapsed() >= Duration::from_millis(340),
        "{:?}",
        t0.elapsed()
    );
    // The probe's duration counts from its first echo, not from the wait before it.
    assert!(o.duration < Duration::from_millis(300), "{o:?}");
    // Due a second ago: re-timed from now, so the echoes still go out 100 ms apart (~200 ms).
    let t0 = Instant::now();
    let late = tokio::time::Instant::now() - Duration::from_secs(1);
    let o = rounds.probe(&p, late, TIMEOUT).await;
    assert_all_answered(&o, "127.0.0.1", 3);
    assert!(
        t0.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t0.elapsed()
    );
}

/// A round whose caller goes away is withdrawn at its next echo; the driver goes on with others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_round_is_withdrawn() {
    let engine = Arc::new(IcmpEngine::new());
    let rounds = IcmpRounds::new();
    // 100 echoes 10 ms apart take a second; give up after 50 ms.
    let p = prober(&engine, "127.0.0.1", 100, 10);
    let now = tokio::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(50), rounds.probe(&p, now, TIMEOUT)).await;
    assert!(r.is_err(), "the probe was cancelled mid-flight");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = engine.stats();
    assert!(stats.sent >= 2 && stats.sent < 20, "{stats:?}");
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(engine.stats().sent, stats.sent, "nothing sent after");
    let o = rounds
        .probe(&prober(&engine, "127.0.0.1", 2, 1), now, TIMEOUT)
        .await;
    assert_all_answered(&o, "127.0.0.1", 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_go_through_the_resolver() {
    let engine = Arc::new(IcmpEngine::new());
    let mut cfg = IcmpConfig::new("localhost");
    cfg.family = Some(IpFamily::Ipv4);
    let o = IcmpProber::new(cfg, engine.clone())
        .unwrap()
        .probe(TIMEOUT)
        .await;
    assert_all_answered(&o, "127.0.0.1", 1);
    assert_eq!(engine.opened().len(), 1);
}

/// 60 concurrent probes of both families through one engine, several to the same address, run
/// alone and then through one rounds driver on one schedule: each gets exactly its own five
/// replies, the engine saw exactly 300 requests and 300 matched replies each time, and nothing
/// stays in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_probes_never_mix_replies() {
    let targets: Vec<String> = (0..60)
        .map(|i| match i % 3 {
            0 => "::1".to_owned(),
            _ => format!("127.0.0.{}", 1 + i % 10),
        })
        .collect();
    for driven in [false, true] {
        let engine = Arc::new(IcmpEngine::new());
        let rounds = Arc::new(IcmpRounds::new());
        let mut tasks = Vec::new();
        for t in &targets {
            let p = prober(&engine, t, 5, 2);
            let rounds = rounds.clone();
            tasks.push(tokio::spawn(async move {
                probe(&rounds, driven, &p, TIMEOUT).await
            }));
        }
        for (t, task) in targets.iter().zip(tasks) {
            let o = task.await.unwrap();
            assert_all_answered(&o, t, 5);
        }
        let stats = engine.stats();
        assert_eq!(
            (stats.sent, stats.replies, stats.errors, stats.in_flight),
            (300, 300, 0, 0),
            "driven {driven}: {stats:?}"
        );
        assert_eq!(
            engine.opened().len(),
            2,
            "one socket per family served all 60 probes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_leaves_nothing_in_flight() {
    let engine = Arc::new(IcmpEngine::new());
    // 100 echoes 10 ms apart take a second; give up after 50 ms.
    let p = prober(&engine, "127.0.0.1", 100, 10);
    let r = tokio::time::timeout(Duration::from_millis(50), p.probe(TIMEOUT)).await;
    assert!(r.is_err(), "the probe was cancelled mid-flight");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stats = engine.stats();
    assert!(stats.sent >= 2 && stats.sent < 100, "{stats:?}");
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    // The engine still works afterwards.
    assert_all_answered(
        &prober(&engine, "127.0.0.1", 2, 1).probe(TIMEOUT).await,
        "127.0.0.1",
        2,
    );
}

/// `p` probed once, through `rounds` when `driven`, else on its own.
async fn probe(rounds: &IcmpRounds, driven: bool, p: &IcmpProber, timeout: Duration) -> Outcome {
    if driven {
        rounds.probe(p, tokio::time::Instant::now(), timeout).await
    } else {
        p.probe(timeout).await
    }
}

/// The timeout bounds the whole probe, run alone or through the rounds driver: echoes that do not
/// fit are not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_bounds_the_whole_probe() {
    let engine = Arc::new(IcmpEngine::new());
    let rounds = IcmpRounds::new();
    // Ten echoes 100 ms apart cannot fit in 250 ms: three are sent, all answered.
    let ten = prober(&engine, "127.0.0.1", 10, 100);
    let one = prober(&engine, "127.0.0.1", 1, 0);
    for driven in [false, true] {
        let started = Instant::now();
        let o = probe(&rounds, driven, &ten, Duration::from_millis(250)).await;
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert!(o.success, "{o:?}");
        assert_eq!((icmp(&o).sent, icmp(&o).received), (3, 3), "{o:?}");
        assert!(
            o.message.contains("only 3 of 10 echo requests fit"),
            "{}",
            o.message
        );

        let o = probe(&rounds, driven, &one, Duration::ZERO).await;
        assert_eq!(o.reason, Some(Reason::Timeout), "driven {driven}: {o:?}");
        assert_eq!(icmp(&o).received, 0);
    }
}

#[tokio::test]
async fn unresolvable_names_are_dns_errors() {
    let engine = Arc::new(IcmpEngine::new());
    let o = prober(&engine, "no-such-host.invalid", 1, 0)
        .probe(TIMEOUT)
        .await;
    assert_eq!(o.reason, Some(Reason::DnsError), "{o:?}");
    assert!(o.message.contains("no-such-host.invalid"), "{}", o.message);
    assert!(engine.opened().is_empty(), "no socket needed");
}

#[test]
fn invalid_configs_are_rejected() {
    let engine = Arc::new(IcmpEngine::new());
    let mut cfg = IcmpConfig::new("127.0.0.1");
    cfg.count = 0;
    let err = IcmpProber::new(cfg, engine.clone()).unwrap_err();
    assert!(err.0.contains("icmp.count"), "{err}");
    let yaml_like: Result<IcmpConfig, _> =
        serde_json::from_str(r#"{"host": "127.0.0.1", "timeout": "1s"}"#);
    assert!(yaml_like.is_err(), "unknown fields are rejected");
}

/// Regression: 10,000 probes of 5 echoes started at once on one thread (`fping -c 5 -p 10`'s load). Loopback answers inside `sendto`, so the
/// replies used to pile up in the socket buffer behind 10,000 runnable tasks until the kernel dropped
/// them (80 % loss); senders now drain the queue when the receive task falls behind.
#[test]
fn a_burst_of_ten_thousand_probes_loses_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Arc::new(IcmpEngine::new());
    let probers: Vec<IcmpProber> = (0..10_000)
        .map(|i| {
            prober(
                &engine,
                &format!("127.0.{}.{}", i / 250, i % 250 + 1),
                5,
                10,
            )
        })
        .collect();
    let received: u32 = rt.block_on(async {
        let tasks: Vec<_> = probers
            .into_iter()
            .map(|p| tokio::spawn(async move { p.probe(TIMEOUT).await }))
            .collect();
        let mut received = 0;
        for t in tasks {
            received += icmp(&t.await.unwrap()).received;
        }
        received
    });
    let stats = engine.stats();
    assert_eq!(
        (received, stats.sent, stats.replies, stats.in_flight),
        (50_000, 50_000, 50_000, 0),
        "{stats:?}"
    );
}
