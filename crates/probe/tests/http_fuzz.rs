//! Arbitrary bytes from a "server" never panic the HTTP prober, never outlive the timeout, and garbage
//! is classified. Each case runs a real loopback responder.

mod http_support;

use std::time::{Duration, Instant};

use http_support::{hold, read_request, serve};
use probe::http::{HttpConfig, HttpProber};
use probe::{Outcome, Reason};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

const TIMEOUT: Duration = Duration::from_millis(1500);
const MARGIN: Duration = Duration::from_millis(700);

/// Serves `reply` (then closes its sending side) to one probe and returns the outcome.
fn probe_against(reply: Vec<u8>) -> (Outcome, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let addr = serve(move |mut s| {
            let reply = reply.clone();
            async move {
                if read_request(&mut s).await.is_ok() {
                    let _ = s.write_all(&reply).await;
                    // Half-close and drain, so the kernel sends FIN rather than RST over unread data.
                    let _ = s.shutdown().await;
                    hold(s).await;
                }
            }
        })
        .await;
        let mut cfg = HttpConfig::new(format!("http://{addr}/"));
        cfg.body_limit = 256;
        let prober = HttpProber::new(cfg).expect("valid config");
        let start = Instant::now();
        let o = prober.probe(TIMEOUT).await;
        (o, start.elapsed())
    })
}

fn check_invariants(o: &Outcome, took: Duration) {
    assert!(took < TIMEOUT + MARGIN, "took {took:?}");
    assert_eq!(o.success, o.reason.is_none(), "{o:?}");
    assert!(!o.message.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(reply in proptest::collection::vec(any::<u8>(), 0..600)) {
        let first = reply.first().copied();
        let (o, took) = probe_against(reply);
        check_invariants(&o, took);
        match first {
            // Nothing at all, then FIN: closed before a response.
            None => prop_assert_eq!(o.reason, Some(Reason::ConnectionReset), "{:?}", o),
            // A status line must start with "HTTP/" (leading blank lines aside): anything else is garbage.
            Some(b) if !b"H\r\n".contains(&b) => prop_assert_eq!(o.reason, Some(Reason::ProtocolError), "{:?}", o),
            Some(_) => {}
        }
    }

    #[test]
    fn arbitrary_heads_and_bodies_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        status in 100u16..1000,
    ) {
        let mut reply = format!("HTTP/1.1 {status} X\r\n").into_bytes();
        reply.extend_from_slice(&tail);
        let (o, took) = probe_against(reply);
        check_invariants(&o, took);
        if let probe::Details::Http(h) = &o.details {
            prop_assert!(h.body.len() <= 256);
            prop_assert_eq!(h.body.len() as u64, h.body_bytes);
        }
    }
}
