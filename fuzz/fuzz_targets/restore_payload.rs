//! `parse_restore_payload` (kube-proxy's `iptables-restore --noflush` input) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netfilter::{ParseOptions, parse_restore_payload};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_restore_payload(&text, &ParseOptions::default());
});
