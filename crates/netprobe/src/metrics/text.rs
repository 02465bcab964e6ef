//! OpenMetrics → Prometheus text format 0.0.4 conversion.

/// [`openmetrics_to_prometheus_text`] without a second buffer: the few edits (`_total` after
/// counter names in `# HELP`/`# TYPE` lines, dropping the final `# EOF`) are applied in place in
/// one backward pass. With 10,000 checks the text is ~4 MB, and each extra buffer of that size a
/// scrape frees stays resident under glibc malloc (its mmap threshold adapts upwards).
pub(super) fn openmetrics_into_prometheus_text(mut text: String) -> String {
    const SUFFIX: &[u8] = b"_total";
    if let Some(body) = text.strip_suffix("# EOF\n") {
        let len = body.len();
        text.truncate(len);
    }
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut inserts = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        for prefix in ["# HELP ", "# TYPE "] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let rest = rest.trim_end_matches('\n');
                let name = rest.split_once(' ').map_or(rest, |(n, _)| n);
                if counters.contains(name) {
                    inserts.push(offset + prefix.len() + name.len());
                }
            }
        }
        offset += line.len();
    }
    // Anything this pass does not reproduce exactly (a `# EOF` elsewhere, a line without its
    // newline, `\r`) goes through the general conversion.
    if text.contains("# EOF") || (!text.is_empty() && !text.ends_with('\n')) || text.contains('\r')
    {
        return openmetrics_to_prometheus_text(&text);
    }
    drop(counters);
    let mut bytes = text.into_bytes();
    let old_len = bytes.len();
    bytes.resize(old_len + inserts.len() * SUFFIX.len(), 0);
    let (mut read_end, mut write_end) = (old_len, bytes.len());
    for &at in inserts.iter().rev() {
        let n = read_end - at;
        bytes.copy_within(at..read_end, write_end - n);
        write_end -= n + SUFFIX.len();
        bytes[write_end..write_end + SUFFIX.len()].copy_from_slice(SUFFIX);
        read_end = at;
    }
    // Only ASCII was inserted between whole UTF-8 sequences, so this cannot fail; the fallback
    // keeps the function total anyway.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Rewrites OpenMetrics text into the Prometheus 0.0.4 text format.
///
/// The two differ, for what prometheus-client emits, only in counters (OpenMetrics names the family
/// `x` and its sample `x_total`; the Prometheus format names both `x_total`) and the `# EOF` trailer.
pub fn openmetrics_to_prometheus_text(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + counters.len() * 24);
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
