//! Prints a generated ruleset: `cargo run -p netfilter --features gen --example gen_dump -- SEED [v6]`.
use netfilter::Family;
use netfilter::generate::{GenConfig, ruleset_text};

fn main() {
    let mut args = std::env::args().skip(1);
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let family = if args.next().as_deref() == Some("v6") {
        Family::Ipv6
    } else {
        Family::Ipv4
    };
    print!("{}", ruleset_text(seed, &GenConfig::new(family)));
}
