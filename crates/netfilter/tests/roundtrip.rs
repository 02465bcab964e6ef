//! parse → render → parse is the identity on generated rulesets (both families, with counters,
//! unknown modules, ipsets), and rendering a parsed canonical text gives the text back.
#![allow(clippy::unwrap_used, reason = "tests")]

use netfilter::generate::{GenConfig, ruleset_text};
use netfilter::render::render_ruleset;
use netfilter::{Family, ParseOptions, parse_save};
use proptest::prelude::*;

fn roundtrip(seed: u64, cfg: &GenConfig) {
    let opts = ParseOptions {
        family: Some(cfg.family),
        backend: None,
    };
    let text = ruleset_text(seed, cfg);
    let first = parse_save(&text, &opts).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
    let rendered = render_ruleset(&first);
    assert_eq!(rendered, text, "seed {seed}: render(parse(text)) != text");
    let second = parse_save(&rendered, &opts).unwrap();
    assert_eq!(
        second, first,
        "seed {seed}: parse(render(parse(text))) != parse(text)"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn roundtrip_ipv4(seed in any::<u64>(), counters in any::<bool>(), sets in any::<bool>()) {
        let cfg = GenConfig { with_counters: counters, with_sets: sets, max_user_chains: 5, max_rules: 10, ..GenConfig::new(Family::Ipv4) };
        roundtrip(seed, &cfg);
    }

    #[test]
    fn roundtrip_ipv6(seed in any::<u64>(), counters in any::<bool>(), sets in any::<bool>()) {
        let cfg = GenConfig { with_counters: counters, with_sets: sets, max_user_chains: 5, max_rules: 10, ..GenConfig::new(Family::Ipv6) };
        roundtrip(seed, &cfg);
    }

    /// The parser never panics, whatever the bytes (errors are fine).
    #[test]
    fn arbitrary_text_never_panics(text in "(\\*filter\n|:INPUT ACCEPT \\[0:0\\]\n|-A INPUT |! |-s |-m |tcp |--dport |\"|\\\\|[ -~]{0,12}|COMMIT\n){0,40}") {
        let _ = parse_save(&text, &ParseOptions::default());
        let _ = netfilter::parse_restore_payload(&text, &ParseOptions::default());
    }
}

#[test]
fn generator_is_deterministic_and_varied() {
    let cfg = GenConfig::new(Family::Ipv4);
    assert_eq!(ruleset_text(7, &cfg), ruleset_text(7, &cfg));
    assert_ne!(ruleset_text(7, &cfg), ruleset_text(8, &cfg));
    // Over a few seeds every target kind and the main modules appear.
    let all: String = (0..200).map(|s| ruleset_text(s, &cfg)).collect();
    for needle in [
        "-j DNAT",
        "-j SNAT",
        "-j MASQUERADE",
        "-j REDIRECT",
        "-j REJECT",
        "-j MARK",
        "-j CONNMARK",
        "-j NOTRACK",
        "-j CT",
        "-g GEN-",
        "-m conntrack",
        "-m statistic",
        "-m multiport",
        "-m icmp",
        "-m owner",
        "-m mac",
        "-m pkttype",
    ] {
        assert!(all.contains(needle), "{needle} never generated");
    }
}
