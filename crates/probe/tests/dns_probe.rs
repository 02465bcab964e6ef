//! DNS prober against a small authoritative responder started in the test on loopback.
//!
//! The responder serves the zone `example.test.` over UDP and TCP on the same port:
//! `www` has A 192.0.2.1 and 192.0.2.2, AAAA 2001:db8::1 and TXT "hello world" "v=probe"; `big` has 30
//! A records and answers UDP with the TC bit set and no records; every other name is NXDOMAIN. Modes
//! make it misbehave: garbage bytes, silence, or stray replies before the real one.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use probe::dns::{DnsConfig, DnsProber, DnsTransport};
use probe::{Details, DnsDetails, Outcome, Phase, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Answer from the zone.
    Zone,
    /// Answer every UDP query with bytes that are not a DNS message.
    Garbage,
    /// Send garbage, then the real answer.
    GarbageThenZone,
    /// Never answer.
    Silent,
    /// Send a reply with the wrong id and one with the wrong question, then the real answer.
    StrayFirst,
}

struct Responder {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    last_rd: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

const GARBAGE: &[u8] = b"\x00\x07\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x03www";

fn zone_answer(query: &Message, over_tcp: bool) -> Message {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.add_queries(query.queries.clone());
    let Some(q) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    let www = Name::from_ascii("www.example.test.").unwrap();
    let big = Name::from_ascii("big.example.test.").unwrap();
    let rec = |name: &Name, data| Record::from_rdata(name.clone(), 300, data);
    if q.name == www {
        match q.query_type {
            RecordType::A => {
                reply.add_answer(rec(&www, RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))));
                reply.add_answer(rec(&www, RData::A(A(Ipv4Addr::new(192, 0, 2, 2)))));
            }
            RecordType::AAAA => {
                reply.add_answer(rec(&www, RData::AAAA(AAAA("2001:db8::1".parse().unwrap()))));
            }
            RecordType::TXT => {
                let txt = TXT::new(vec!["hello world".to_owned(), "v=probe".to_owned()]);
                reply.add_answer(rec(&www, RData::TXT(txt)));
            }
            _ => {}
        }
    } else if q.name == big && q.query_type == RecordType::A {
        if over_tcp {
            for i in 1..=30 {
                reply.add_answer(rec(&big, RData::A(A(Ipv4Addr::new(198, 51, 100, i)))));
            }
        } else {
            reply.metadata.truncation = true;
        }
    } else {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply
}

async fn start(mode: Mode, ip: IpAddr) -> Responder {
    // UDP and TCP must share the port number; retry if the TCP side of a fresh UDP port is taken.
    let (udp, tcp) = 'bind: {
        for _ in 0..20 {
            let udp = UdpSocket::bind((ip, 0)).await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind((ip, port)).await {
                break 'bind (udp, tcp);
            }
        }
        panic!("could not bind UDP and TCP on the same port");
    };
    let addr = udp.local_addr().unwrap();
    let udp_queries = Arc::new(AtomicUsize::new(0));
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    let last_rd = Arc::new(AtomicBool::new(false));

    let (count, rd) = (udp_queries.clone(), last_rd.clone());
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            rd.store(query.metadata.recursion_desired, Ordering::SeqCst);
            let answer = zone_answer(&query, false);
            match mode {
                Mode::Zone => {
                    udp.send_to(&answer.to_vec().unwrap(), peer).await.unwrap();
                }
                Mode::Garbage => {
                    udp.send_to(GARBAGE, peer).await.unwrap();
                }
                Mode::GarbageThenZone => {
                    udp.send_to(GARBAGE, peer).await.unwrap();
                    udp.send_to(&answer.to_vec().unwrap(), peer).await.unwrap();
                }
                Mode::Silent => {}
                Mode::StrayFirst => {
                    let mut wrong_id = answer.clone();
                    wrong_id.metadata.id = answer.metadata.id.wrapping_add(1);
                    wrong_id.answers.clear();
                    let stray = Name::from_ascii("www.example.test.").unwrap();
                    wrong_id.add_answer(Record::from_rdata(
                        stray,
                        300,
                        RData::A(A(Ipv4Addr::new(203, 0, 113, 66))),
                    ));
                    udp.send_to(&wrong_id.to_vec().unwrap(), peer)
                        .await
                        .unwrap();
                    let mut wrong_question = wrong_id.clone();
                    wrong_question.metadata.id = answer.metadata.id;
                    wrong_question.queries = vec![Query::query(
                        Name::from_ascii("evil.example.test.").unwrap(),
                        RecordType::A,
                    )];
                    udp.send_to(&wrong_question.to_vec().unwrap(), peer)
                        .await
                        .unwrap();
                    udp.send_to(&answer.to_vec().unwrap(), peer).await.unwrap();
                }
            }
        }
    });

    let count = tcp_queries.clone();
    let tcp_task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = tcp.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut msg).await.is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                if mode == Mode::Silent {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let Ok(query) = Message::from_vec(&msg) else {
                    return;
                };
                let answer = zone_answer(&query, true).to_vec().unwrap();
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                let _ = stream.write_all(&framed).await;
            });
        }
    });
    Responder {
        addr,
        udp_queries,
        tcp_queries,
        last_rd,
        tasks: vec![udp_task, tcp_task],
    }
}

fn prober(server: SocketAddr, query: &str, record_type: &str) -> DnsProber {
    DnsProber::new(DnsConfig {
        server: server.to_string(),
        query: query.to_owned(),
        record_type: record_type.to_owned(),
        ..DnsConfig::default()
    })
    .unwrap()
}

fn dns(outcome: &Outcome) -> &DnsDetails {
    match &outcome.details {
        Details::Dns(d) => d,
        other => panic!("expected dns details, got {other:?}"),
    }
}

const T: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_query_succeeds_with_exact_answers() {
    let r = start(Mode::Zone, Ipv4Addr::LOCALHOST.into()).await;
    let out = prober(r.addr, "www.example.test", "A").probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.reason, None);
    let d = dns(&out);
    assert_eq!(d.server, Some(r.addr));
    assert_eq!(d.query, "www.example.test.");
    assert_eq!(d.record_type, "A");
    assert_eq!(d.rcode.as_deref(), Some("NOERROR"));
    assert_eq!(
        d.answers,
        vec![
            "www.example.test. 300 IN A 192.0.2.1",
            "www.example.test. 300 IN A 192.0.2.2"
        ]
    );
    assert!(!d.tcp_fallback);
    assert_eq!(out.dns_rcode(), Some("NOERROR"));
    let query = out.phase(Phase::Query).expect("query phase");
    assert!(query <= out.duration && query < T);
    assert_eq!(r.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(r.tcp_queries.load(Ordering::SeqCst), 0);
    assert!(r.last_rd.load(Ordering::SeqCst), "RD is set by default");
}

#[tokio::test]
async fn recursion_desired_false_clears_rd() {
    let r = start(Mode::Zone, Ipv4Addr::LOCALHOST.into()).await;
    r.last_rd.store(true, Ordering::SeqCst);
    let cfg = DnsConfig {
        server: r.addr.to_string(),
        query: "www.example.test".to_owned(),
        recursion_desired: false,
        ..DnsConfig::default()
    };
    let out = DnsProber::new(cfg).unwrap().probe(T).await;
    assert!(out.success, "{out:?}");
    assert!(!r.last_rd.load(Ordering::SeqCst));
}

#[tokio::test]
async fn aaaa_query_over_ipv6_loopback() {
    let r = start(Mode::Zone, Ipv6Addr::LOCALHOST.into()).await;
    let out = prober(r.addr, "www.example.test", "aaaa").probe(T).await;
    assert!(out.success, "{out:?}");
    let d = dns(&out);
    assert_eq!(d.record_type, "AAAA");
    assert_eq!(d.answers, vec!["www.example.test. 300 IN AAAA 2001:db8::1"]);
    assert_eq!(out.ip(), Some(Ipv6Addr::LOCALHOST.into()));
}

#[tokio::test]
async fn txt_answers_are_quoted() {
    let r = start(Mode::Zone, Ipv4Addr::LOCALHOST.into()).await;
    let out = prober(r.addr, "www.example.test", "TXT").probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(
        dns(&out).answers,
        vec![r#"www.example.test. 300 IN TXT "hello world" "v=probe""#]
    );
}

#[tokio::test]
async fn nxdomain_is_dns_error() {
    let r = start(Mode::Zone, Ipv4Addr::LOCALHOST.into()).await;
    let out = prober(r.addr, "nope.example.test", "A").probe(T).await;
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::DnsError));
    assert!(out.message.contains("NXDOMAIN"), "{}", out.message);
    let d = dns(&out);
    assert_eq!(d.rcode.as_deref(), Some("NXDOMAIN"));
    assert!(d.answers.is_empty());
    assert!(
        out.phase(Phase::Query).is_some(),
        "a response arrived, so the query phase is timed"
    );
}

#[tokio::test]
async fn nxdomain_succeeds_when_listed_in_valid_rcodes() {
    let r = start(Mode::Zone, Ipv4Addr::LOCALHOST.into()).await;
    let cfg = DnsConfig {
        server: r.addr.to_string(),
        query: "nope.example.test".to_owned(),
        valid_rcodes: vec!["NXDOMAIN".to_owned()],
        ..DnsConfig::default()
    };
    let out = DnsProber::new(cfg).unwrap().probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(dns(&out).rcode.as_deref(), Some("NXDOMAIN"));
}

#[tokio::test]
async fn garbage_reply_is_protocol_error() {
    let r = start(Mode::Garbage, Ipv4Addr::LOCALHOST.into()).await;
    let out = prober(r.addr, "www.example.test", "A")
        .probe(Duration::from_millis(400))
        .await;
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::ProtocolError), "{out:?}");
    assert!(
        out.message.contains("not a valid DNS message"),
        "{}",
        out.message
    );
    assert_eq!(dns(&out).rcode, None);
    assert!(out.phases.is_empty());
}

#[tokio::test]
async fn garbage_then_valid_reply_succeeds() {
    let r = start(Mode::GarbageThenZone, Ipv4Addr::LOCALHOST.into()).await;
    let out = prober(r.addr, "www.example.test", "A").probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(dns(&out).answers.len(), 2);
}

#[tokio::test]
async fn silent_server_times_out() {
    let r = start(Mode::Silent, Ipv4Addr::LOCALHOST.into()).await;
    let timeout = Duration::from_millis(300);
    let out = prober(r.addr, "www.example.test", "A").probe(timeout).await;
    assert_eq!(out.reason, Some(Reason::Timeout), "{out:?}");
    assert!(
        out.duration >= timeout && out.duration < timeout * 3,
        "{:?}",
        out.duration
    );
    assert_eq!(dns(&out).rcode, None);
    assert_eq!(r.udp_queries.load(Ordering::SeqCst), 1, "no retransmission");
}

#[tokio::test]
async fn silent_server_over_tcp_times_out() {
    let r = start(Mode::Silent, Ipv4Addr::LOCALHOST.into()).await;
    let cfg = DnsConfig {
        server: r.addr.to_string(),
        query: "www.example.test".to_owned(),
        transport: DnsTransport::Tcp,
        ..DnsConfig::default()
    };
    let out = DnsProber::new(cfg)
        .unwrap()
        .probe(Duration::from_millis(300))
        .await;
    assert_eq!(out.reason, Some(Reason::Timeout), "{out:?}");
    assert_eq!(r.tcp_queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stray_replies_with_wrong_id_or_question_are_ignored() {
    let r = start(Mode::StrayFirst, Ipv4Addr::LOCALHOST.into()).await;
    let out = prober(r.addr, "www.example.test", "A").probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(
        dns(&out).answers,
        vec![
            "www.example.test. 300 IN A 192.0.2.1",
            "www.example.test. 300 IN A 192.0.2.2"
        ]
    );
}

#[tokio::test]
async fn truncated_udp_reply_is_retried_over_tcp() {
    let r = start(Mode::Zone, Ipv4Addr::LOCALHOST.into()).await;
    let out = prober(r.addr, "big.example.test", "A").probe(T).await;
    assert!(out.success, "{out:?}");
    let d = dns(&out);
    assert!(d.tcp_fallback);
    assert_eq!(d.answers.len(), 30);
    assert_eq!(d.answers[29], "big.example.test. 300 IN A 198.51.100.30");
    assert_eq!(r.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(r.tcp_queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tcp_transport_only_uses_tcp() {
    let r = start(Mode::Zone, Ipv4Addr::LOCALHOST.into()).await;
    let cfg = DnsConfig {
        server: r.addr.to_string(),
        query: "www.example.test".to_owned(),
        transport: DnsTransport::Tcp,
        ..DnsConfig::default()
    };
    let out = DnsProber::new(cfg).unwrap().probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(dns(&out).answers.len(), 2);
    assert!(!dns(&out).tcp_fallback);
    assert_eq!(r.udp_queries.load(Ordering::SeqCst), 0);
    assert_eq!(r.tcp_queries.load(Ordering::SeqCst), 1);
}

/// A port with nothing bound: the kernel answers the datagram with ICMP port unreachable, which a
/// connected UDP socket reports as ECONNREFUSED.
#[tokio::test]
async fn closed_udp_port_is_connection_refused() {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let out = prober(server, "www.example.test", "A").probe(T).await;
    assert_eq!(out.reason, Some(Reason::ConnectionRefused), "{out:?}");
    assert!(out.duration < T, "refusal is immediate, not a timeout");
}

#[tokio::test]
async fn closed_tcp_port_is_connection_refused() {
    let port = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let cfg = DnsConfig {
        server: format!("127.0.0.1:{port}"),
        query: "www.example.test".to_owned(),
        transport: DnsTransport::Tcp,
        ..DnsConfig::default()
    };
    let out = DnsProber::new(cfg).unwrap().probe(T).await;
    assert_eq!(out.reason, Some(Reason::ConnectionRefused), "{out:?}");
}
