//! `parse_save` never panics, and whatever it accepts renders to text that parses back to the
//! same rendering (parse → render → parse is the identity on the model).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netfilter::{ParseOptions, parse_save, render_ruleset};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(rs) = parse_save(&text, &ParseOptions::default()) else {
        return;
    };
    let rendered = render_ruleset(&rs);
    let again = parse_save(&rendered, &ParseOptions::default())
        .unwrap_or_else(|e| panic!("rendered text does not parse: {e}\n{rendered}"));
    assert_eq!(rendered, render_ruleset(&again), "render is not a fixed point");
});
