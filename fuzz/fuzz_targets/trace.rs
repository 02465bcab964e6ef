//! Whatever ruleset parses, tracing a few fixed flows through it never panics and stays within
//! the evaluator's limits (no unbounded loops on jump cycles or statistic fan-out).
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use netfilter::eval::{Flow, HostModel, Limits, Origin, trace_with};
use netfilter::{ParseOptions, parse_save};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(rs) = parse_save(&text, &ParseOptions::default()) else {
        return;
    };
    let host = HostModel::default().with_addr("eth0", ip("198.51.100.5"), 24);
    let limits = Limits {
        max_depth: 16,
        max_rules: 10_000,
        max_branches: 16,
    };
    let flows = [
        Flow::tcp(Origin::LocalOutput, ip("198.51.100.5"), ip("127.0.0.1"), 9099),
        Flow::udp(Origin::Forward, ip("203.0.113.9"), ip("192.0.2.7"), 53),
        Flow::echo_request(Origin::Input, ip("203.0.113.9"), ip("198.51.100.5")),
    ];
    for flow in &flows {
        let traces = trace_with(std::slice::from_ref(&rs), &host, flow, &limits);
        assert!(traces.branches.len() <= limits.max_branches + 1);
    }
});
