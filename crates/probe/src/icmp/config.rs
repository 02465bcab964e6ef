//! The `icmp:` probe configuration and its validation.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::packet::TOKEN_LEN;
use crate::resolve::Family;
use crate::{ConfigError, HumanDuration};

/// Most echoes one probe may send.
pub const MAX_COUNT: u16 = 100;
/// Largest payload: 65,535 (IPv4 total length) − 20 (IPv4 header) − 8 (ICMP header). Applied to
/// ICMPv6 too, whose limit without jumbograms is 20 bytes higher.
pub const MAX_SIZE: usize = 65_507;
/// Longest gap allowed between the echoes of one probe.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// Configuration of an ICMP echo probe (the `icmp:` key of a check).
///
/// A probe sends `count` echo requests `interval` apart and waits for the replies until the check's
/// timeout, which bounds the whole probe (resolution included). It succeeds when at least one reply
/// arrives, like blackbox_exporter's ICMP prober.
///
/// ```yaml
/// icmp:
///   host: 198.51.100.7
///   count: 5
///   interval: 100ms
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpConfig {
    /// Host to ping: a DNS name, an IPv4 literal, or an IPv6 literal with or without brackets. A name
    /// is resolved through the system resolver (`/etc/hosts`, then DNS) at every probe.
    pub host: String,
    /// Echo requests per probe, 1 to 100. Default 1 (as blackbox_exporter). More echoes give a loss
    /// ratio and RTT spread but make the probe last about `(count − 1) × interval` longer.
    #[serde(default = "default_count")]
    pub count: u16,
    /// Gap between the echo requests of one probe, from `0s` (back to back) to `10s`. Default `100ms`:
    /// short enough that 5 echoes fit in the kubelet's default 1s timeout, long enough not to look
    /// like a flood to routers that rate-limit ICMP. Timer resolution is 1 ms.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Payload bytes per echo request after the 8-byte ICMP header, 8 to 65,507. Default 56, as
    /// `ping`, giving 64-byte ICMP messages. The first 8 bytes carry netprobe's probe token, which is
    /// how replies are matched to probes.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Address family to use when `host` is a name with both A and AAAA records: `ipv4` or `ipv6`.
    /// Unset: the first address the resolver returns (normally IPv4). With an IP literal it must
    /// match the literal's family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<IpFamily>,
}

/// Address family of an ICMP probe, as written in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    /// IPv4 (ICMP, RFC 792).
    Ipv4,
    /// IPv6 (ICMPv6, RFC 4443).
    Ipv6,
}

impl From<IpFamily> for Family {
    fn from(f: IpFamily) -> Family {
        match f {
            IpFamily::Ipv4 => Family::V4,
            IpFamily::Ipv6 => Family::V6,
        }
    }
}

fn default_count() -> u16 {
    1
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

fn default_size() -> usize {
    56
}

impl IcmpConfig {
    /// A configuration for `host` with every other field at its default.
    pub fn new(host: impl Into<String>) -> Self {
        IcmpConfig {
            host: host.into(),
            count: default_count(),
            interval: default_interval(),
            size: default_size(),
            family: None,
        }
    }

    /// `host` without surrounding whitespace and brackets, as handed to the resolver.
    pub(crate) fn bare_host(&self) -> &str {
        self.host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    /// Checks every field; the error names the field and the allowed values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let host = self.bare_host();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(ConfigError(format!(
                "icmp.host {:?}: expected a host name or an IP address",
                self.host
            )));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255])
            {
                return Err(ConfigError(format!(
                    "icmp.host {host}: expected a unicast address (unspecified, multicast and broadcast addresses \
                     answer from other addresses or not at all)"
                )));
            }
            match (self.family, ip) {
                (Some(IpFamily::Ipv4), IpAddr::V6(_)) | (Some(IpFamily::Ipv6), IpAddr::V4(_)) => {
                    return Err(ConfigError(format!(
                        "icmp.family {:?} does not match the address {host}",
                        self.family
                            .map(|f| if f == IpFamily::Ipv4 { "ipv4" } else { "ipv6" })
                            .unwrap_or_default()
                    )));
                }
                _ => {}
            }
        }
        if !(1..=MAX_COUNT).contains(&self.count) {
            return Err(ConfigError(format!(
                "icmp.count {}: expected 1 to {MAX_COUNT}",
                self.count
            )));
        }
        if self.interval.0 > MAX_INTERVAL {
            return Err(ConfigError(format!(
                "icmp.interval {}: expected at most 10s",
                self.interval
            )));
        }
        if !(TOKEN_LEN..=MAX_SIZE).contains(&self.size) {
            return Err(ConfigError(format!(
                "icmp.size {}: expected {TOKEN_LEN} to {MAX_SIZE} bytes",
                self.size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<IcmpConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_and_fields() {
        let c = parse(r#"{"host": "example.org"}"#).unwrap();
        assert_eq!(c, IcmpConfig::new("example.org"));
        assert_eq!(
            (c.count, c.interval.0, c.size, c.family),
            (1, Duration::from_millis(100), 56, None)
        );
        let c = parse(
            r#"{"host": "[::1]", "count": 5, "interval": "10ms", "size": 100, "family": "ipv6"}"#,
        )
        .unwrap();
        assert_eq!(c.bare_host(), "::1");
        assert_eq!(c.family, Some(IpFamily::Ipv6));
        c.validate().unwrap();
        assert!(
            parse(r#"{"host": "a", "ttl": 3}"#).is_err(),
            "unknown keys are rejected"
        );
        assert!(parse(r#"{"host": "a", "family": "ipx"}"#).is_err());
        assert!(
            parse(r#"{"host": "a", "interval": "10"}"#).is_err(),
            "a duration needs a unit"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |f: &dyn Fn(&mut IcmpConfig), needle: &str| {
            let mut c = IcmpConfig::new("127.0.0.1");
            f(&mut c);
            let err = c.validate().unwrap_err().0;
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        };
        bad(&|c| c.host = " ".into(), "icmp.host");
        bad(&|c| c.host = "a b".into(), "icmp.host");
        bad(&|c| c.host = "0.0.0.0".into(), "unicast");
        bad(&|c| c.host = "ff02::1".into(), "unicast");
        bad(&|c| c.host = "255.255.255.255".into(), "unicast");
        bad(&|c| c.count = 0, "icmp.count 0");
        bad(&|c| c.count = 101, "1 to 100");
        bad(&|c| c.size = 7, "icmp.size 7");
        bad(&|c| c.size = 65_508, "65507");
        bad(
            &|c| c.interval = HumanDuration(Duration::from_secs(11)),
            "icmp.interval",
        );
        bad(&|c| c.family = Some(IpFamily::Ipv6), "does not match");
        let mut ok = IcmpConfig::new("localhost");
        ok.family = Some(IpFamily::Ipv6);
        ok.count = 100;
        ok.size = MAX_SIZE;
        ok.interval = HumanDuration(Duration::ZERO);
        ok.validate().unwrap();
    }
}
