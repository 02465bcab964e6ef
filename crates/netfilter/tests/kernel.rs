//! The generator and the renderer against real iptables (needs root and network namespaces; fails,
//! never skips, where they are missing): generated rulesets are applied with `iptables-restore`
//! (legacy and nf_tables, IPv4 and IPv6) in a fresh namespace, read back with `iptables-save`,
//! and must parse and render to exactly the text that was applied.
#![allow(clippy::unwrap_used, reason = "tests")]

use lab::Netns;
use netfilter::generate::{GenConfig, model};
use netfilter::render::render_ruleset;
use netfilter::{Backend, Family, ParseOptions, Ruleset, parse_save};

fn table_texts(rs: &Ruleset) -> Vec<(String, String)> {
    rs.tables
        .iter()
        .map(|t| {
            let one = Ruleset {
                tables: vec![t.clone()],
                ..rs.clone()
            };
            (t.name.to_string(), render_ruleset(&one))
        })
        .collect()
}

fn check(backend: Backend, family: Family, seeds: std::ops::Range<u64>) {
    let prefix = match (family, backend) {
        (Family::Ipv4, Backend::Legacy) => "iptables-legacy",
        (Family::Ipv4, Backend::Nft) => "iptables-nft",
        (Family::Ipv6, Backend::Legacy) => "ip6tables-legacy",
        (Family::Ipv6, Backend::Nft) => "ip6tables-nft",
        (_, Backend::Nftables) => panic!("no iptables tool writes native nftables tables"),
    };
    let dir = tempfile::tempdir().unwrap();
    for seed in seeds {
        let cfg = GenConfig::new(family);
        let text = render_ruleset(&model(seed, &cfg));
        let path = dir.path().join(format!("rules-{seed}"));
        std::fs::write(&path, &text).unwrap();
        let ns = Netns::new("nfgen").unwrap();
        if let Err(e) = ns.exec_ok(&[&format!("{prefix}-restore"), path.to_str().unwrap()]) {
            panic!("seed {seed} {prefix}: restore refused the generated ruleset: {e}\n{text}");
        }
        let saved = ns.exec_ok(&[&format!("{prefix}-save")]).unwrap();
        let parsed = parse_save(&saved, &ParseOptions::default()).unwrap_or_else(|e| {
            panic!("seed {seed} {prefix}: cannot parse iptables-save output: {e}\n{saved}")
        });
        assert_eq!(
            parsed.backend,
            Some(backend),
            "seed {seed}: backend from the header"
        );
        assert_eq!(parsed.family, family, "seed {seed}: family from the header");
        let ours = parse_save(
            &text,
            &ParseOptions {
                family: Some(family),
                backend: None,
            },
        )
        .unwrap();
        let theirs = table_texts(&parsed);
        for (name, want) in table_texts(&ours) {
            let got = theirs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.as_str());
            assert_eq!(
                got,
                Some(want.as_str()),
                "seed {seed} {prefix}: table {name} differs after the kernel round trip"
            );
        }
    }
}

#[test]
fn kernel_accepts_generated_rulesets_legacy_v4() {
    check(Backend::Legacy, Family::Ipv4, 0..25);
}

#[test]
fn kernel_accepts_generated_rulesets_nft_v4() {
    check(Backend::Nft, Family::Ipv4, 0..25);
}

#[test]
fn kernel_accepts_generated_rulesets_legacy_v6() {
    check(Backend::Legacy, Family::Ipv6, 100..125);
}

#[test]
fn kernel_accepts_generated_rulesets_nft_v6() {
    check(Backend::Nft, Family::Ipv6, 100..125);
}

/// The non-comment lines of each table of a dump, by table name.
fn table_blocks(text: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut cur: Option<(String, Vec<String>)> = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(t) = line.strip_prefix('*') {
            cur = Some((t.to_string(), Vec::new()));
        } else if line == "COMMIT" {
            if let Some((t, lines)) = cur.take() {
                out.insert(t, lines);
            }
        } else if let Some((_, lines)) = cur.as_mut() {
            lines.push(line.to_string());
        }
    }
    out
}

/// Loads `text` with `{prefix}-restore` in a fresh namespace (after running each `setup` command
/// there, e.g. `ipset create`) and asserts `{prefix}-save` prints every table back line for line.
fn assert_kernel_round_trip(prefix: &str, what: &str, text: &str, setup: &[&[&str]]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules");
    std::fs::write(&path, text).unwrap();
    let ns = Netns::new("nfkp").unwrap();
    for argv in setup {
        ns.exec_ok(argv).unwrap();
    }
    if let Err(e) = ns.exec_ok(&[&format!("{prefix}-restore"), path.to_str().unwrap()]) {
        panic!("{prefix}-restore refused the generated {what} ruleset: {e}\n{text}");
    }
    let saved = ns.exec_ok(&[&format!("{prefix}-save")]).unwrap();
    let (want, got) = (table_blocks(text), table_blocks(&saved));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{prefix} {what}: tables"
    );
    for (table, lines) in &want {
        assert_eq!(
            Some(lines),
            got.get(table),
            "{prefix} {what}: table {table} differs after the kernel round trip"
        );
    }
    saved
}

fn tool_prefix(backend: Backend) -> &'static str {
    match backend {
        Backend::Legacy => "iptables-legacy",
        Backend::Nft => "iptables-nft",
        Backend::Nftables => panic!("no iptables tool writes native nftables tables"),
    }
}

/// The kube-proxy generator prints exactly what `iptables-save` prints after `iptables-restore`
/// of it: same chains in the same order, same rules, same quoting, same statistic probabilities.
fn kube_proxy_round_trip(backend: Backend) {
    use netfilter::generate::kube_proxy::{KubeProxyConfig, kube_proxy_text};
    let mut cfg = KubeProxyConfig::new(60, 3);
    cfg.empty_every = 7;
    cfg.nodeport_every = 5;
    cfg.backend = backend;
    let text = kube_proxy_text(&cfg);
    let saved = assert_kernel_round_trip(tool_prefix(backend), "kube-proxy", &text, &[]);
    let parsed = parse_save(&saved, &ParseOptions::default()).unwrap();
    assert_eq!(parsed.backend, Some(backend));
    assert_eq!(
        parsed.rule_count(),
        parse_save(&text, &ParseOptions::default())
            .unwrap()
            .rule_count()
    );
}

/// The Docker, Calico and Antrea generators print what `iptables-save` prints (their ipsets are
/// created first, as the CNI agents create them before restoring).
fn cni_round_trip(backend: Backend) {
    use netfilter::generate::cni::{NodeConfig, antrea_text, calico_text, docker_text};
    let mut cfg = NodeConfig::new(5);
    cfg.backend = backend;
    let prefix = tool_prefix(backend);
    assert_kernel_round_trip(prefix, "docker", &docker_text(&cfg), &[]);
    let calico_sets: &[&[&str]] = &[
        &["ipset", "create", "cali40masq-ipam-pools", "hash:net"],
        &["ipset", "create", "cali40all-ipam-pools", "hash:net"],
    ];
    assert_kernel_round_trip(prefix, "calico", &calico_text(&cfg), calico_sets);
    let antrea_sets: &[&[&str]] = &[&["ipset", "create", "ANTREA-POD-IP", "hash:net"]];
    assert_kernel_round_trip(prefix, "antrea", &antrea_text(&cfg), antrea_sets);
}

#[test]
fn cni_generators_match_iptables_save_legacy() {
    cni_round_trip(Backend::Legacy);
}

#[test]
fn cni_generators_match_iptables_save_nft() {
    cni_round_trip(Backend::Nft);
}

#[test]
fn kube_proxy_generator_matches_iptables_save_legacy() {
    kube_proxy_round_trip(Backend::Legacy);
}

#[test]
fn kube_proxy_generator_matches_iptables_save_nft() {
    kube_proxy_round_trip(Backend::Nft);
}
