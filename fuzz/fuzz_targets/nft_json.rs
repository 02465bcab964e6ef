//! `nft::parse_json` (the output of `nft -j list ruleset`) never panics, and tracing a few fixed
//! flows through whatever it accepts never panics either.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use netfilter::eval::{Flow, HostModel, Limits, Origin, trace_all_with};
use netfilter::nft::parse_json;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(nft) = parse_json(&text) else {
        return;
    };
    let host = HostModel::default().with_addr("eth0", ip("198.51.100.5"), 24);
    let limits = Limits {
        max_depth: 16,
        max_rules: 10_000,
        max_branches: 16,
    };
    let flows = [
        Flow::tcp(Origin::LocalOutput, ip("198.51.100.5"), ip("198.51.100.10"), 80),
        Flow::udp(Origin::Forward, ip("203.0.113.9"), ip("192.0.2.7"), 53),
        Flow::echo_request(Origin::Input, ip("fd00::9"), ip("fd00::5")),
    ];
    for flow in &flows {
        let traces = trace_all_with(&[], std::slice::from_ref(&nft), &host, flow, &limits);
        assert!(traces.branches.len() <= limits.max_branches + 1);
    }
});
