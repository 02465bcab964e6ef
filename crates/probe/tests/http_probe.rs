//! HTTP prober against real loopback servers: success, status, refusal, timeouts, caps, garbage,
//! redirects and what the server receives.

mod http_support;

use std::time::{Duration, Instant};

use http_support::{hold, read_request, refused_addr, respond, serve};
use probe::http::{HttpConfig, HttpProber, USER_AGENT};
use probe::{Details, HttpDetails, Outcome, Phase, Reason};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(5);
/// Slack for the scheduler on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(500);

fn prober(cfg: HttpConfig) -> HttpProber {
    HttpProber::new(cfg).expect("valid config")
}

fn http(o: &Outcome) -> &HttpDetails {
    match &o.details {
        Details::Http(h) => h,
        other => panic!("expected http details, got {other:?}"),
    }
}

fn phase_names(o: &Outcome) -> Vec<Phase> {
    o.phases.iter().map(|p| p.phase).collect()
}

#[tokio::test]
async fn ok_200_has_phases_and_body() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_ok() {
            respond(
                &mut s,
                "200 OK",
                &[("Content-Type", "text/plain")],
                b"hello world",
            )
            .await;
        }
    })
    .await;
    let o = prober(HttpConfig::new(format!("http://{addr}/healthz")))
        .probe(TIMEOUT)
        .await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.reason, None);
    let h = http(&o);
    assert_eq!(h.status, Some(200));
    assert_eq!(h.version.as_deref(), Some("HTTP/1.1"));
    assert_eq!(h.url, format!("http://{addr}/healthz"));
    assert_eq!(h.peer, Some(addr));
    assert!(h.connected);
    assert_eq!(&h.body[..], b"hello world");
    assert_eq!(h.body_bytes, 11);
    assert!(!h.body_truncated);
    assert_eq!(h.redirects, 0);
    assert!(h.tls.is_none());
    assert_eq!(
        phase_names(&o),
        [
            Phase::Resolve,
            Phase::Connect,
            Phase::Processing,
            Phase::Transfer
        ]
    );
    let sum: Duration = o.phases.iter().map(|p| p.duration).sum();
    assert!(
        sum <= o.duration,
        "phases {sum:?} exceed the probe's {:?}",
        o.duration
    );
    assert!(o.message.contains("200"), "{}", o.message);
}

#[tokio::test]
async fn status_500_fails_with_the_code_and_never_the_body() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_ok() {
            respond(
                &mut s,
                "500 Internal Server Error",
                &[],
                b"secret stack trace",
            )
            .await;
        }
    })
    .await;
    let o = prober(HttpConfig::new(format!("http://{addr}/")))
        .probe(TIMEOUT)
        .await;
    assert!(!o.success);
    assert_eq!(o.reason, Some(Reason::HttpStatus));
    assert!(o.message.contains("500"), "{}", o.message);
    assert!(!o.message.contains("secret"), "{}", o.message);
    assert_eq!(http(&o).status, Some(500));
    // The body is still read for conditions.
    assert_eq!(&http(&o).body[..], b"secret stack trace");
}

#[tokio::test]
async fn status_399_succeeds_and_400_fails() {
    for (status, ok) in [
        ("399 Odd", true),
        ("400 Bad Request", false),
        ("204 No Content", true),
    ] {
        let addr = serve(move |mut s| async move {
            if read_request(&mut s).await.is_ok() {
                respond(&mut s, status, &[], b"").await;
            }
        })
        .await;
        let o = prober(HttpConfig::new(format!("http://{addr}/")))
            .probe(TIMEOUT)
            .await;
        assert_eq!(o.success, ok, "{status}: {o:?}");
    }
}

#[tokio::test]
async fn refused_port_is_connection_refused() {
    let addr = refused_addr();
    let o = prober(HttpConfig::new(format!("http://{addr}/")))
        .probe(TIMEOUT)
        .await;
    assert_eq!(o.reason, Some(Reason::ConnectionRefused), "{o:?}");
    assert!(!http(&o).connected);
    assert_eq!(http(&o).peer, Some(addr));
    assert!(o.message.contains(&addr.to_string()), "{}", o.message);
    assert_eq!(phase_names(&o), [Phase::Resolve, Phase::Connect]);
}

#[tokio::test]
async fn silent_server_times_out_in_processing() {
    let addr = serve(hold).await;
    let timeout = Duration::from_millis(400);
    let start = Instant::now();
    let o = prober(HttpConfig::new(format!("http://{addr}/")))
        .probe(timeout)
        .await;
    let took = start.elapsed();
    assert_eq!(o.reason, Some(Reason::Timeout), "{o:?}");
    assert!(took >= timeout && took < timeout + MARGIN, "took {took:?}");
    assert!(o.message.contains("phase processing"), "{}", o.message);
    assert!(http(&o).connected);
    assert_eq!(
        phase_names(&o),
        [Phase::Resolve, Phase::Connect, Phase::Processing]
    );
    assert!(o.phase(Phase::Processing).expect("processing phase") >= Duration::from_millis(300));
}

#[tokio::test]
async fn endless_body_is_capped_and_truncated() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_err() {
            return;
        }
        // No Content-Length: the body runs until the connection closes, which it never does.
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            .await;
        let chunk = [b'x'; 777];
        for _ in 0..1_000_000 {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let mut cfg = HttpConfig::new(format!("http://{addr}/stream"));
    cfg.body_limit = 10_000;
    let o = prober(cfg).probe(TIMEOUT).await;
    assert!(o.success, "{o:?}");
    let h = http(&o);
    assert!(h.body_truncated);
    assert_eq!(h.body_bytes, 10_000);
    assert_eq!(h.body.len(), 10_000);
    assert!(
        o.duration < TIMEOUT,
        "should stop at the cap, not the timeout: {:?}",
        o.duration
    );
}

#[tokio::test]
async fn endless_chunked_body_is_capped_at_a_chunk_boundary() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_err() {
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        for _ in 0..1_000_000 {
            if s.write_all(b"400\r\n").await.is_err() || s.write_all(&[b'y'; 1024]).await.is_err() {
                return;
            }
            if s.write_all(b"\r\n").await.is_err() {
                return;
            }
        }
    })
    .await;
    let mut cfg = HttpConfig::new(format!("http://{addr}/"));
    cfg.body_limit = 4096; // exactly four chunks: the fifth proves there is more
    let o = prober(cfg).probe(TIMEOUT).await;
    assert!(o.success, "{o:?}");
    assert!(http(&o).body_truncated);
    assert_eq!(http(&o).body_bytes, 4096);
}

#[tokio::test]
async fn body_exactly_at_the_cap_is_not_truncated() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_ok() {
            respond(&mut s, "200 OK", &[], &[b'z'; 100]).await;
        }
    })
    .await;
    let mut cfg = HttpConfig::new(format!("http://{addr}/"));
    cfg.body_limit = 100;
    let o = prober(cfg).probe(TIMEOUT).await;
    assert!(o.success, "{o:?}");
    assert!(!http(&o).body_truncated);
    assert_eq!(http(&o).body_bytes, 100);
}

#[tokio::test]
async fn slow_body_ends_at_the_timeout_in_transfer() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_err() {
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            .await;
        for _ in 0..100 {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let timeout = Duration::from_millis(600);
    let start = Instant::now();
    let o = prober(HttpConfig::new(format!("http://{addr}/")))
        .probe(timeout)
        .await;
    let took = start.elapsed();
    assert_eq!(o.reason, Some(Reason::Timeout), "{o:?}");
    assert!(took < timeout + MARGIN, "took {took:?}");
    assert!(o.message.contains("phase transfer"), "{}", o.message);
    assert_eq!(http(&o).status, Some(200));
    assert!(http(&o).body_bytes >= 1, "{o:?}");
    assert_eq!(
        phase_names(&o),
        [
            Phase::Resolve,
            Phase::Connect,
            Phase::Processing,
            Phase::Transfer
        ]
    );
}

#[tokio::test]
async fn headers_trickled_forever_end_at_the_timeout() {
    // The first byte arrives, the head never completes: the timeout names `transfer`.
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_err() {
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
        for i in 0..100 {
            if s.write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let timeout = Duration::from_millis(500);
    let o = prober(HttpConfig::new(format!("http://{addr}/")))
        .probe(timeout)
        .await;
    assert_eq!(o.reason, Some(Reason::Timeout), "{o:?}");
    assert!(o.message.contains("phase transfer"), "{}", o.message);
    assert!(o.duration < timeout + MARGIN);
    assert_eq!(http(&o).status, None);
}

#[tokio::test]
async fn garbage_instead_of_http_is_a_protocol_error() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_ok() {
            let _ = s
                .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage")
                .await;
            let _ = s.shutdown().await;
            hold(s).await;
        }
    })
    .await;
    let o = prober(HttpConfig::new(format!("http://{addr}/")))
        .probe(TIMEOUT)
        .await;
    assert_eq!(o.reason, Some(Reason::ProtocolError), "{o:?}");
    assert!(o.message.contains("invalid HTTP response"), "{}", o.message);
    assert!(http(&o).connected);
    assert_eq!(http(&o).status, None);
}

#[tokio::test]
async fn close_without_response_is_connection_reset() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_ok() {
            let _ = s.shutdown().await;
            hold(s).await;
        }
    })
    .await;
    let o = prober(HttpConfig::new(format!("http://{addr}/")))
        .probe(TIMEOUT)
        .await;
    assert_eq!(o.reason, Some(Reason::ConnectionReset), "{o:?}");
    assert!(o.message.contains("closed the connection"), "{}", o.message);
}

#[tokio::test]
async fn redirect_301_then_200_is_followed() {
    let addr = serve(|mut s| async move {
        let Ok(req) = read_request(&mut s).await else {
            return;
        };
        match req.target.as_str() {
            "/old" => {
                respond(
                    &mut s,
                    "301 Moved Permanently",
                    &[("Location", "/new?q=1")],
                    b"moved",
                )
                .await
            }
            "/new?q=1" => respond(&mut s, "200 OK", &[], b"arrived").await,
            _ => respond(&mut s, "404 Not Found", &[], b"").await,
        }
    })
    .await;
    let o = prober(HttpConfig::new(format!("http://{addr}/old")))
        .probe(TIMEOUT)
        .await;
    assert!(o.success, "{o:?}");
    let h = http(&o);
    assert_eq!(h.redirects, 1);
    assert_eq!(h.status, Some(200));
    assert_eq!(h.url, format!("http://{addr}/new?q=1"));
    assert_eq!(&h.body[..], b"arrived");
    // Phases are summed over both hops: one entry each.
    assert_eq!(
        phase_names(&o),
        [
            Phase::Resolve,
            Phase::Connect,
            Phase::Processing,
            Phase::Transfer
        ]
    );
    assert!(o.message.contains("after 1 redirect"), "{}", o.message);
}

#[tokio::test]
async fn redirect_to_another_server_is_followed() {
    let second = serve(|mut s| async move {
        if read_request(&mut s).await.is_ok() {
            respond(&mut s, "200 OK", &[], b"second").await;
        }
    })
    .await;
    let location = format!("http://{second}/there");
    let first = serve(move |mut s| {
        let location = location.clone();
        async move {
            if read_request(&mut s).await.is_ok() {
                respond(
                    &mut s,
                    "307 Temporary Redirect",
                    &[("Location", &location)],
                    b"",
                )
                .await;
            }
        }
    })
    .await;
    let o = prober(HttpConfig::new(format!("http://{first}/")))
        .probe(TIMEOUT)
        .await;
    assert!(o.success, "{o:?}");
    assert_eq!(http(&o).peer, Some(second));
    assert_eq!(&http(&o).body[..], b"second");
}

#[tokio::test]
async fn redirect_loop_stops_at_the_maximum() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_ok() {
            respond(&mut s, "302 Found", &[("Location", "/loop")], b"").await;
        }
    })
    .await;
    let o = prober(HttpConfig::new(format!("http://{addr}/loop")))
        .probe(TIMEOUT)
        .await;
    assert_eq!(o.reason, Some(Reason::HttpStatus), "{o:?}");
    assert_eq!(http(&o).redirects, 10);
    assert!(
        o.message.contains("stopped after 10 redirects"),
        "{}",
        o.message
    );

    let mut cfg = HttpConfig::new(format!("http://{addr}/loop"));
    cfg.max_redirects = 2;
    let o = prober(cfg).probe(TIMEOUT).await;
    assert_eq!(o.reason, Some(Reason::HttpStatus), "{o:?}");
    assert_eq!(http(&o).redirects, 2);
}

#[tokio::test]
async fn redirects_not_followed_when_disabled() {
    let addr = serve(|mut s| async move {
        if read_request(&mut s).await.is_ok() {
            respond(
                &mut s,
                "302 Found",
                &[("Location", "/elsewhere")],
                b"see elsewhere",
            )
            .await;
        }
    })
    .await;
    let mut cfg = HttpConfig::new(format!("http://{addr}/"));
    cfg.follow_redirects = false;
    let o = prober(cfg).probe(TIMEOUT).await;
    assert!(o.success, "a 3xx is success by the 200-399 rule: {o:?}");
    assert_eq!(http(&o).status, Some(302));
    assert_eq!(http(&o).redirects, 0);
    assert_eq!(&http(&o).body[..], b"see elsewhere");
}

#[tokio::test]
async fn post_body_and_headers_reach_the_server() {
    let (tx, mut rx) = mpsc::channel(4);
    let addr = serve(move |mut s| {
        let tx = tx.clone();
        async move {
            if let Ok(req) = read_request(&mut s).await {
                respond(&mut s, "201 Created", &[], b"").await;
                let _ = tx.send(req).await;
            }
        }
    })
    .await;
    let mut cfg = HttpConfig::new(format!("http://{addr}/submit?x=1#frag"));
    cfg.method = "post".into();
    cfg.body = Some(r#"{"ping":true}"#.into());
    cfg.headers
        .insert("Content-Type".into(), "application/json".into());
    cfg.headers.insert("X-Probe".into(), "netprobe test".into());
    let o = prober(cfg).probe(TIMEOUT).await;
    assert!(o.success, "{o:?}");
    let seen = rx.recv().await.expect("the server saw a request");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/submit?x=1");
    assert_eq!(seen.body, br#"{"ping":true}"#);
    assert_eq!(seen.header("content-length"), Some("13"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-probe"), Some("netprobe test"));
    assert_eq!(seen.header("host"), Some(addr.to_string().as_str()));
    assert_eq!(seen.header("user-agent"), Some(USER_AGENT));
    assert_eq!(seen.header("accept"), Some("*/*"));
    assert_eq!(seen.header("connection"), Some("close"));
}

#[tokio::test]
async fn host_and_user_agent_can_be_overridden() {
    let (tx, mut rx) = mpsc::channel(4);
    let addr = serve(move |mut s| {
        let tx = tx.clone();
        async move {
            if let Ok(req) = read_request(&mut s).await {
                respond(&mut s, "200 OK", &[], b"").await;
                let _ = tx.send(req).await;
            }
        }
    })
    .await;
    let mut cfg = HttpConfig::new(format!("http://{addr}/"));
    cfg.headers.insert("Host".into(), "virtual.example".into());
    cfg.headers
        .insert("User-Agent".into(), "kube-probe/1.31".into());
    assert!(prober(cfg).probe(TIMEOUT).await.success);
    let seen = rx.recv().await.expect("request");
    assert_eq!(seen.header("host"), Some("virtual.example"));
    assert_eq!(seen.header("user-agent"), Some("kube-probe/1.31"));
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
            .count(),
        1
    );
}

#[tokio::test]
async fn see_other_after_post_becomes_a_get_without_body() {
    let (tx, mut rx) = mpsc::channel(4);
    let addr = serve(move |mut s| {
        let tx = tx.clone();
        async move {
            let Ok(req) = read_request(&mut s).await else {
                return;
            };
            if req.target == "/form" {
                respond(&mut s, "303 See Other", &[("Location", "/result")], b"").await;
            } else {
                respond(&mut s, "200 OK", &[], b"done").await;
            }
            let _ = tx.send(req).await;
        }
    })
    .await;
    let mut cfg = HttpConfig::new(format!("http://{addr}/form"));
    cfg.method = "POST".into();
    cfg.body = Some("a=1".into());
    let o = prober(cfg).probe(TIMEOUT).await;
    assert!(o.success, "{o:?}");
    let first = rx.recv().await.expect("first request");
    let second = rx.recv().await.expect("second request");
    assert_eq!(
        (first.method.as_str(), first.body.as_slice()),
        ("POST", b"a=1".as_slice())
    );
    assert_eq!(second.method, "GET");
    assert!(second.body.is_empty());
    assert_eq!(second.header("content-length"), None);
}

#[tokio::test]
async fn ipv6_loopback_url() {
    let addr = http_support::serve_on("[::1]:0", |mut s| async move {
        if read_request(&mut s).await.is_ok() {
            respond(&mut s, "200 OK", &[], b"v6").await;
        }
    })
    .await;
    let o = prober(HttpConfig::new(format!("http://[::1]:{}/", addr.port())))
        .probe(TIMEOUT)
        .await;
    assert!(o.success, "{o:?}");
    assert_eq!(http(&o).peer, Some(addr));
}
