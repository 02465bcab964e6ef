//! Config validation. Exchanges with real servers are in `tests/http_*.rs`.

use super::*;

fn err(cfg: HttpConfig) -> String {
    HttpProber::new(cfg).expect_err("must be rejected").0
}

#[test]
fn defaults_follow_the_documented_values() {
    let cfg: HttpConfig = serde_json::from_str(r#"{"url": "http://127.0.0.1:8080/healthz"}"#)
        .expect("valid test input");
    assert_eq!(cfg, HttpConfig::new("http://127.0.0.1:8080/healthz"));
    assert_eq!(cfg.method, "GET");
    assert_eq!(cfg.body_limit, 65536);
    assert!(cfg.tls_verify && cfg.follow_redirects);
    assert_eq!(cfg.max_redirects, 10);
}

#[test]
fn unknown_fields_are_rejected() {
    let e = serde_json::from_str::<HttpConfig>(r#"{"url": "http://h/", "verify": false}"#)
        .expect_err("must be rejected");
    assert!(e.to_string().contains("unknown field `verify`"), "{e}");
}

#[test]
fn urls_are_validated() {
    assert!(err(HttpConfig::new("not a url")).starts_with("url \"not a url\":"));
    assert!(err(HttpConfig::new("ftp://h/")).contains("scheme must be http or https"));
    assert!(err(HttpConfig::new("https://user:secret@h/")).contains("credentials in the URL"));
    assert!(!err(HttpConfig::new("https://user:secret@h/")).contains("secret"));
    let p = HttpProber::new(HttpConfig::new("HTTP://[::1]:8080")).expect("valid test input");
    assert_eq!(p.target(), "http://[::1]:8080/");
}

#[test]
fn methods_and_headers_are_validated() {
    let mut cfg = HttpConfig::new("http://h/");
    cfg.method = "post".into();
    assert_eq!(
        HttpProber::new(cfg).expect("valid test input").inner.method,
        Method::POST
    );

    let mut cfg = HttpConfig::new("http://h/");
    cfg.method = "GE T".into();
    assert!(err(cfg).contains("not a valid HTTP method"));

    let mut cfg = HttpConfig::new("http://h/");
    cfg.headers.insert("Bad Name".into(), "v".into());
    assert!(err(cfg).contains("\"Bad Name\" is not a valid header name"));

    let mut cfg = HttpConfig::new("http://h/");
    cfg.headers.insert("X-Ok".into(), "line\nbreak".into());
    assert!(err(cfg).contains("the value of \"X-Ok\""));

    let mut cfg = HttpConfig::new("http://h/");
    cfg.headers.insert("Content-Length".into(), "3".into());
    assert!(err(cfg).contains("set by the prober"));
}

#[test]
fn configured_headers_replace_defaults() {
    let mut cfg = HttpConfig::new("http://h/");
    cfg.headers.insert("User-Agent".into(), "custom/1".into());
    cfg.headers.insert("Host".into(), "virtual.example".into());
    let p = HttpProber::new(cfg).expect("valid test input");
    assert_eq!(
        p.inner.headers.get_all(header::USER_AGENT).iter().count(),
        1
    );
    assert_eq!(p.inner.headers[header::USER_AGENT], "custom/1");
    assert_eq!(
        p.inner.host_override.as_ref().expect("valid test input"),
        "virtual.example"
    );
    assert!(!p.inner.headers.contains_key(header::HOST));
}

#[test]
fn body_limit_and_ca_file_are_checked_at_load() {
    let mut cfg = HttpConfig::new("http://h/");
    cfg.body_limit = MAX_BODY_LIMIT + 1;
    assert!(err(cfg).contains("body_limit"));
    let mut cfg = HttpConfig::new("https://h/");
    cfg.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(err(cfg).contains("ca_file /nonexistent/ca.pem"));
}

#[test]
fn host_header_has_the_port_only_when_not_default() {
    let h =
        |u: &str| host_header(&Url::parse(u).expect("valid test input")).expect("valid test input");
    assert_eq!(h("http://example.com/"), "example.com");
    assert_eq!(h("https://example.com:443/"), "example.com");
    assert_eq!(h("http://[::1]:8080/"), "[::1]:8080");
}

#[test]
fn probers_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let p = HttpProber::new(HttpConfig::new("https://h/")).expect("valid test input");
    send_sync(&p);
    // The probe future crosses threads in a multi-threaded scheduler.
    send(p.probe(Duration::from_secs(1)));
    let t =
        crate::tcp::TcpProber::new(crate::tcp::TcpConfig::new("h:1")).expect("valid test input");
    send_sync(&t);
    send(t.probe(Duration::from_secs(1)));
}
