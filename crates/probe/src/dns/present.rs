//! Presentation forms: response-code mnemonics and answer records as zone-file text.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, Record};

/// The IANA mnemonic of every response code a probe can name, by numeric value. Codes 16 and up only
/// arrive through EDNS(0) (RFC 6891 §6.1.3). Code 16 is both BADVERS and BADSIG; BADSIG only occurs
/// with TSIG, which a probe never sends, so 16 is named BADVERS.
///
/// Source: IANA "DNS RCODEs" registry (RFC 1035, 2136, 6891, 8945, 2930, 4635, 7873).
const NAMES: [(u16, &str); 20] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (6, "YXDOMAIN"),
    (7, "YXRRSET"),
    (8, "NXRRSET"),
    (9, "NOTAUTH"),
    (10, "NOTZONE"),
    (11, "DSOTYPENI"),
    (16, "BADVERS"),
    (17, "BADKEY"),
    (18, "BADTIME"),
    (19, "BADMODE"),
    (20, "BADNAME"),
    (21, "BADALG"),
    (22, "BADTRUNC"),
    (23, "BADCOOKIE"),
];

/// The numeric value of `code` (0–4095).
pub(crate) fn rcode_value(code: ResponseCode) -> u16 {
    u16::from(code)
}

/// The mnemonic of `code` (`NOERROR`, `NXDOMAIN`, …); an unregistered code is `RCODE<n>`, in the
/// style RFC 3597 uses for unknown types.
pub(crate) fn rcode_name(code: ResponseCode) -> String {
    let value = rcode_value(code);
    match NAMES.iter().find(|(v, _)| *v == value) {
        Some((_, name)) => (*name).to_owned(),
        None => format!("RCODE{value}"),
    }
}

/// Parses a mnemonic (any case) or `RCODE<n>` into the numeric code; `BADSIG` is accepted as 16.
pub(crate) fn parse_rcode(text: &str) -> Option<u16> {
    let upper = text.trim().to_ascii_uppercase();
    if upper == "BADSIG" {
        return Some(16);
    }
    if let Some((value, _)) = NAMES.iter().find(|(_, name)| *name == upper) {
        return Some(*value);
    }
    let n: u16 = upper.strip_prefix("RCODE")?.parse().ok()?;
    // Response codes are 12 bits wide: 4 in the header and 8 more in the OPT record.
    (n < 4096).then_some(n)
}

/// All mnemonics, for error messages.
pub(crate) fn known_rcodes() -> String {
    NAMES.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
}

/// One record in zone-file presentation format: `owner TTL CLASS TYPE RDATA`. TXT strings are quoted
/// and escaped as RFC 1035 §5.1 writes them (hickory prints them bare); other types use hickory's
/// presentation of the RDATA.
pub(crate) fn record_text(record: &Record) -> String {
    match &record.data {
        RData::TXT(txt) => {
            let strings: Vec<String> = txt.txt_data.iter().map(|s| quote(s)).collect();
            format!(
                "{} {} {} {} {}",
                record.name,
                record.ttl,
                record.dns_class,
                record.record_type(),
                strings.join(" ")
            )
        }
        _ => record.to_string(),
    }
}

/// A `<character-string>` in quotes with `"` and `\` escaped and non-printable bytes as `\DDD`.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::TXT;

    #[test]
    fn rcode_names_round_trip() {
        for (value, name) in NAMES {
            let code = ResponseCode::from((value >> 4) as u8, (value & 0x0f) as u8);
            assert_eq!(rcode_name(code), name);
            assert_eq!(parse_rcode(&name.to_ascii_lowercase()), Some(value));
        }
        assert_eq!(rcode_name(ResponseCode::from(0xf0, 1)), "RCODE3841");
        assert_eq!(parse_rcode("RCODE3841"), Some(3841));
        assert_eq!(parse_rcode("rcode3"), Some(3));
        assert_eq!(parse_rcode("BADSIG"), Some(16));
        assert_eq!(parse_rcode("RCODE4096"), None);
        assert_eq!(parse_rcode("NOSUCH"), None);
    }

    #[test]
    fn txt_is_quoted_and_escaped() {
        let name = Name::from_ascii("t.example.").unwrap();
        let txt = TXT::from_bytes(vec![b"say \"hi\"", b"a\\b\x01"]);
        let record = Record::from_rdata(name, 60, RData::TXT(txt));
        assert_eq!(
            record_text(&record),
            r#"t.example. 60 IN TXT "say \"hi\"" "a\\b\001""#
        );
    }
}
