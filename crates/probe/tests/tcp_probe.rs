//! TCP prober against real loopback listeners.
//!
//! A connect timeout needs a dropped SYN, which loopback cannot produce without a firewall; that case is
//! covered by the network-namespace lab tests. Here the timeout is exercised in the `exchange` phase.

mod http_support;

use std::time::{Duration, Instant};

use http_support::{
    Cert, hold, refused_addr, self_signed, serve, serve_on, serve_tls, server_config,
};
use probe::tcp::{EXPECT_READ_LIMIT, TcpConfig, TcpProber};
use probe::{Details, Outcome, Phase, Reason, TcpDetails};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(5);
const MARGIN: Duration = Duration::from_millis(500);

fn tcp(o: &Outcome) -> &TcpDetails {
    match &o.details {
        Details::Tcp(t) => t,
        other => panic!("expected tcp details, got {other:?}"),
    }
}

fn phases(o: &Outcome) -> Vec<Phase> {
    o.phases.iter().map(|p| p.phase).collect()
}

async fn run(cfg: TcpConfig, timeout: Duration) -> Outcome {
    TcpProber::new(cfg)
        .expect("valid config")
        .probe(timeout)
        .await
}

/// A server that reads up to `want` bytes, reports them, then writes `reply` and closes.
async fn reply_server(
    reply: &'static [u8],
    want: usize,
) -> (std::net::SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel(4);
    let addr = serve(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut got = vec![0u8; want];
            if want > 0 && s.read_exact(&mut got).await.is_err() {
                return;
            }
            let _ = tx.send(got).await;
            let _ = s.write_all(reply).await;
            let _ = s.shutdown().await;
            hold(s).await;
        }
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn connect_succeeds_and_reports_both_ends() {
    let addr = serve(hold).await;
    let o = run(TcpConfig::new(addr.to_string()), TIMEOUT).await;
    assert!(o.success, "{o:?}");
    let t = tcp(&o);
    assert!(t.connected);
    assert_eq!(t.peer, Some(addr));
    let local = t.local.expect("local address");
    assert!(local.ip().is_loopback() && local.port() != 0, "{local}");
    assert_eq!(t.received, None);
    assert_eq!(phases(&o), [Phase::Resolve, Phase::Connect]);
    assert!(o.message.contains(&addr.to_string()), "{}", o.message);
}

#[tokio::test]
async fn ipv6_and_names_resolve() {
    let addr = serve_on("[::1]:0", hold).await;
    let o = run(TcpConfig::new(format!("[::1]:{}", addr.port())), TIMEOUT).await;
    assert!(o.success, "{o:?}");
    assert_eq!(tcp(&o).peer, Some(addr));

    let v4 = serve(hold).await;
    let o = run(TcpConfig::new(format!("localhost:{}", v4.port())), TIMEOUT).await;
    assert!(o.success, "{o:?}");
    assert_eq!(tcp(&o).peer, Some(v4));
}

#[tokio::test]
async fn refused_port_is_connection_refused() {
    let addr = refused_addr();
    let o = run(TcpConfig::new(addr.to_string()), TIMEOUT).await;
    assert_eq!(o.reason, Some(Reason::ConnectionRefused), "{o:?}");
    assert!(!tcp(&o).connected);
    assert_eq!(tcp(&o).peer, Some(addr));
    assert_eq!(phases(&o), [Phase::Resolve, Phase::Connect]);
}

#[tokio::test]
async fn send_and_expect_match() {
    let (addr, mut seen) = reply_server(b"+PONG\r\n", 6).await;
    let mut cfg = TcpConfig::new(addr.to_string());
    cfg.send = Some("PING\r\n".into());
    cfg.expect = Some("+PONG".into());
    let o = run(cfg, TIMEOUT).await;
    assert!(o.success, "{o:?}");
    assert_eq!(seen.recv().await.expect("server read"), b"PING\r\n");
    assert!(
        tcp(&o)
            .received
            .as_deref()
            .is_some_and(|r| r.starts_with("+PONG")),
        "{o:?}"
    );
    assert_eq!(
        phases(&o),
        [Phase::Resolve, Phase::Connect, Phase::Exchange]
    );
}

#[tokio::test]
async fn expect_split_across_reads_matches() {
    let addr = serve(|mut s| async move {
        let _ = s.write_all(b"220 smtp.test ES").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = s.write_all(b"MTP ready\r\n").await;
        hold(s).await;
    })
    .await;
    let mut cfg = TcpConfig::new(addr.to_string());
    cfg.expect = Some("ESMTP".into());
    let o = run(cfg, TIMEOUT).await;
    assert!(o.success, "{o:?}");
}

#[tokio::test]
async fn expect_mismatch_quotes_what_arrived() {
    let (addr, _seen) = reply_server(b"-ERR unknown command\r\n", 0).await;
    let mut cfg = TcpConfig::new(addr.to_string());
    cfg.expect = Some("+PONG".into());
    let o = run(cfg, TIMEOUT).await;
    assert_eq!(o.reason, Some(Reason::ExpectMismatch), "{o:?}");
    assert!(
        o.message
            .contains(r#"22 bytes: "-ERR unknown command\r\n""#),
        "{}",
        o.message
    );
    assert!(o.message.contains("connection was closed"), "{}", o.message);
    assert_eq!(
        tcp(&o).received.as_deref(),
        Some("-ERR unknown command\r\n")
    );
}

#[tokio::test]
async fn expect_gives_up_after_64_kib() {
    let addr = serve(|mut s| async move {
        let chunk = [b'x'; 1000];
        for _ in 0..1000 {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let mut cfg = TcpConfig::new(addr.to_string());
    cfg.expect = Some("never".into());
    let o = run(cfg, TIMEOUT).await;
    assert_eq!(o.reason, Some(Reason::ExpectMismatch), "{o:?}");
    assert!(o.message.contains("64 KiB"), "{}", o.message);
    assert!(
        o.message.len() < 400,
        "message quotes too much: {}",
        o.message.len()
    );
    assert_eq!(
        tcp(&o).received.as_ref().map(String::len),
        Some(EXPECT_READ_LIMIT)
    );
}

#[tokio::test]
async fn silent_server_times_out_in_exchange() {
    let addr = serve(hold).await;
    let mut cfg = TcpConfig::new(addr.to_string());
    cfg.send = Some("HELLO\n".into());
    cfg.expect = Some("WELCOME".into());
    let timeout = Duration::from_millis(400);
    let start = Instant::now();
    let o = run(cfg, timeout).await;
    let took = start.elapsed();
    assert_eq!(o.reason, Some(Reason::Timeout), "{o:?}");
    assert!(took >= timeout && took < timeout + MARGIN, "took {took:?}");
    assert!(o.message.contains("phase exchange"), "{}", o.message);
    assert!(o.message.contains("\"WELCOME\""), "{}", o.message);
    assert!(tcp(&o).connected);
    assert_eq!(tcp(&o).received.as_deref(), Some(""));
    assert_eq!(
        phases(&o),
        [Phase::Resolve, Phase::Connect, Phase::Exchange]
    );
}

#[tokio::test]
async fn send_only_writes_and_closes() {
    let (addr, mut seen) = reply_server(b"", 5).await;
    let mut cfg = TcpConfig::new(addr.to_string());
    cfg.send = Some("QUIT\n".into());
    let o = run(cfg, TIMEOUT).await;
    assert!(o.success, "{o:?}");
    assert_eq!(seen.recv().await.expect("server read"), b"QUIT\n");
}

fn tls_cert() -> Cert {
    self_signed("tcp.test", &["127.0.0.1"], (2032, 2, 29))
}

#[tokio::test]
async fn tls_connect_check_with_expect() {
    let cert = tls_cert();
    let addr = serve_tls(server_config(&[&cert]), |mut s| async move {
        let _ = s.write_all(b"* OK IMAP4rev1 ready\r\n").await;
        let _ = s.flush().await;
        hold(s).await;
    })
    .await;
    let mut cfg = TcpConfig::new(addr.to_string());
    cfg.tls = true;
    cfg.tls_verify = false;
    cfg.expect = Some("* OK".into());
    let o = run(cfg, TIMEOUT).await;
    assert!(o.success, "{o:?}");
    let tls = tcp(&o).tls.as_ref().expect("tls details");
    assert_eq!(tls.earliest_not_after, cert.not_after);
    assert_eq!(tls.subject, "CN=tcp.test");
    assert_eq!(
        phases(&o),
        [Phase::Resolve, Phase::Connect, Phase::Tls, Phase::Exchange]
    );
}

#[tokio::test]
async fn tls_connect_check_verifies_by_default() {
    let cert = tls_cert();
    let addr = serve_tls(server_config(&[&cert]), hold).await;
    let mut cfg = TcpConfig::new(addr.to_string());
    cfg.tls = true;
    let o = run(cfg, TIMEOUT).await;
    assert_eq!(o.reason, Some(Reason::TlsError), "{o:?}");
    assert!(o.message.contains("unknown issuer"), "{}", o.message);
    assert!(tcp(&o).connected);
}
