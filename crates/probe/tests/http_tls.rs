//! HTTPS against loopback TLS servers with certificates made by rcgen at test time.

mod http_support;

use std::sync::Arc;
use std::time::Duration;

use http_support::{
    Cert, ca, leaf, read_request, respond, self_signed, serve, serve_tls, server_config, write_file,
};
use probe::http::{HttpConfig, HttpProber};
use probe::{Details, HttpDetails, Outcome, Phase, Reason};
use tokio::io::AsyncReadExt;

const TIMEOUT: Duration = Duration::from_secs(5);

fn http(o: &Outcome) -> &HttpDetails {
    match &o.details {
        Details::Http(h) => h,
        other => panic!("expected http details, got {other:?}"),
    }
}

async fn https_server(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    serve_tls(config, |mut s| async move {
        if read_request(&mut s).await.is_ok() {
            respond(&mut s, "200 OK", &[], b"secure").await;
        }
    })
    .await
}

async fn probe(url: String, edit: impl FnOnce(&mut HttpConfig)) -> Outcome {
    let mut cfg = HttpConfig::new(url);
    edit(&mut cfg);
    HttpProber::new(cfg)
        .expect("valid config")
        .probe(TIMEOUT)
        .await
}

/// A CA that expires before its leaf, so the chain's earliest notAfter is the CA's.
fn chain() -> (Cert, Cert) {
    let ca = ca("netprobe test CA", (2034, 3, 1));
    let leaf = leaf(
        &ca,
        "netprobe test server",
        &["127.0.0.1", "localhost"],
        (2020, 1, 1),
        (2035, 6, 30),
    );
    (ca, leaf)
}

#[tokio::test]
async fn self_signed_without_verification_succeeds_and_reports_expiry() {
    let cert = self_signed("self.test", &["127.0.0.1"], (2031, 5, 17));
    let addr = https_server(server_config(&[&cert])).await;
    let o = probe(format!("https://{addr}/"), |c| c.tls_verify = false).await;
    assert!(o.success, "{o:?}");
    let tls = http(&o).tls.as_ref().expect("tls details");
    assert_eq!(tls.earliest_not_after, cert.not_after);
    assert_eq!(tls.earliest_not_after, 1_936_742_400); // 2031-05-17T00:00:00Z
    assert_eq!(o.certificate_not_after(), Some(cert.not_after));
    assert_eq!(tls.version, "TLSv1.3");
    assert!(tls.cipher.starts_with("TLS13_"), "{}", tls.cipher);
    assert_eq!(tls.subject, "CN=self.test");
    assert_eq!(&http(&o).body[..], b"secure");
    let names: Vec<Phase> = o.phases.iter().map(|p| p.phase).collect();
    assert_eq!(
        names,
        [
            Phase::Resolve,
            Phase::Connect,
            Phase::Tls,
            Phase::Processing,
            Phase::Transfer
        ]
    );
}

#[tokio::test]
async fn self_signed_with_verification_is_an_unknown_issuer() {
    let cert = self_signed("self.test", &["127.0.0.1"], (2031, 5, 17));
    let addr = https_server(server_config(&[&cert])).await;
    let o = probe(format!("https://{addr}/"), |_| {}).await;
    assert_eq!(o.reason, Some(Reason::TlsError), "{o:?}");
    assert!(o.message.contains("unknown issuer"), "{}", o.message);
    assert!(http(&o).connected);
    assert!(http(&o).tls.is_none());
}

#[tokio::test]
async fn ca_file_makes_a_private_chain_verify() {
    let (ca, leaf) = chain();
    let addr = https_server(server_config(&[&leaf, &ca])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_file(&dir, "ca.pem", &ca.pem);
    let o = probe(format!("https://{addr}/"), |c| {
        c.ca_file = Some(ca_file.clone())
    })
    .await;
    assert!(o.success, "{o:?}");
    let tls = http(&o).tls.as_ref().expect("tls details");
    assert_eq!(tls.earliest_not_after, ca.not_after, "the CA expires first");
    assert_eq!(tls.subject, "CN=netprobe test server");

    // The same server without the CA: not trusted.
    let o = probe(format!("https://{addr}/"), |_| {}).await;
    assert_eq!(o.reason, Some(Reason::TlsError), "{o:?}");
    assert!(o.message.contains("unknown issuer"), "{}", o.message);
}

#[tokio::test]
async fn sni_name_is_checked_against_the_certificate() {
    let (ca, leaf) = chain();
    let addr = https_server(server_config(&[&leaf, &ca])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_file(&dir, "ca.pem", &ca.pem);
    // `localhost` is in the certificate; the URL's host name is what is verified.
    let o = probe(format!("https://localhost:{}/", addr.port()), |c| {
        c.ca_file = Some(ca_file.clone())
    })
    .await;
    // (This machine's /etc/hosts maps localhost to 127.0.0.1 only, where the server listens.)
    assert!(o.success, "{o:?}");

    let other = leaf_for(&ca, &["other.test"]);
    let addr = https_server(server_config(&[&other, &ca])).await;
    let o = probe(format!("https://{addr}/"), |c| {
        c.ca_file = Some(ca_file.clone())
    })
    .await;
    assert_eq!(o.reason, Some(Reason::TlsError), "{o:?}");
    assert!(o.message.contains("name mismatch"), "{}", o.message);
    assert!(o.message.contains("127.0.0.1"), "{}", o.message);
}

fn leaf_for(ca: &Cert, sans: &[&str]) -> Cert {
    leaf(ca, "other", sans, (2020, 1, 1), (2033, 1, 1))
}

#[tokio::test]
async fn expired_certificate_is_named() {
    let (ca, _) = chain();
    let old = leaf(&ca, "old", &["127.0.0.1"], (2020, 1, 1), (2021, 1, 1));
    let addr = https_server(server_config(&[&old, &ca])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_file(&dir, "ca.pem", &ca.pem);
    let o = probe(format!("https://{addr}/"), |c| {
        c.ca_file = Some(ca_file.clone())
    })
    .await;
    assert_eq!(o.reason, Some(Reason::TlsError), "{o:?}");
    assert!(o.message.contains("certificate expired"), "{}", o.message);

    // Without verification the expired certificate is accepted and its date reported.
    let o = probe(format!("https://{addr}/"), |c| c.tls_verify = false).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.certificate_not_after(), Some(old.not_after));
}

#[tokio::test]
async fn plain_http_server_on_an_https_url_is_a_tls_error() {
    // As a real HTTP server does with a ClientHello: answer 400 and close.
    let addr = serve(|mut s| async move {
        let mut buf = [0u8; 512];
        if s.read(&mut buf).await.is_ok_and(|n| n > 0) {
            respond(&mut s, "400 Bad Request", &[], b"plain http").await;
        }
    })
    .await;
    let o = probe(format!("https://{addr}/"), |c| c.tls_verify = false).await;
    assert_eq!(o.reason, Some(Reason::TlsError), "{o:?}");
    assert!(o.message.contains("does not speak TLS"), "{}", o.message);
    assert!(
        o.message
            .starts_with(&format!("TLS handshake with 127.0.0.1 ({addr}) failed")),
        "{}",
        o.message
    );
}

#[tokio::test]
async fn http_redirect_to_https_gets_tls_details() {
    let cert = self_signed("self.test", &["127.0.0.1"], (2031, 5, 17));
    let secure = https_server(server_config(&[&cert])).await;
    let location = format!("https://{secure}/");
    let plain = serve(move |mut s| {
        let location = location.clone();
        async move {
            if read_request(&mut s).await.is_ok() {
                respond(
                    &mut s,
                    "308 Permanent Redirect",
                    &[("Location", &location)],
                    b"",
                )
                .await;
            }
        }
    })
    .await;
    let o = probe(format!("http://{plain}/"), |c| c.tls_verify = false).await;
    assert!(o.success, "{o:?}");
    assert_eq!(http(&o).redirects, 1);
    assert_eq!(o.certificate_not_after(), Some(cert.not_after));
    assert!(o.phase(Phase::Tls).is_some());
}
