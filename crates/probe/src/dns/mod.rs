//! DNS prober: one query to a chosen server, judged by the response code.
//!
//! The query is built with hickory-proto (class IN, a random 16-bit id, RD as configured, no EDNS
//! OPT record) and sent over UDP, or TCP with the 2-byte length prefix. A truncated UDP reply (TC
//! bit) is repeated over TCP, as a stub resolver does (RFC 7766 §5). Only a reply whose id and
//! question match is accepted (RFC 5452 §9.1); other replies are skipped, and undecodable ones are
//! remembered so that a server answering only garbage is reported as such. The probe succeeds when
//! the response code is one of `valid_rcodes` (default `NOERROR`, as blackbox_exporter's).
//!
//! Phase: `query`, from sending the query until the matching response has arrived, including a TCP
//! retry. The metrics layer exports it as blackbox_exporter's `probe_dns_lookup_time_seconds`. (In
//! blackbox that gauge times resolving the probe target's own name; here the server is always an IP
//! address, so the query round trip is the only lookup there is.)
//!
//! Outcomes: success; `dns-error` (an rcode outside `valid_rcodes`, named in the message); `timeout`;
//! `connection-refused` (ICMP port unreachable on UDP, RST on TCP); `protocol-error` (only
//! undecodable replies arrived, or TCP closed without a reply); other socket errors by errno.

mod exchange;
mod present;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{ConfigError, Details, DnsDetails, Outcome, Phase, PhaseTiming, Reason};

/// The transport a DNS probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsTransport {
    /// UDP (RFC 1035 §4.2.1); a truncated reply is retried over TCP.
    #[default]
    Udp,
    /// TCP with a 2-byte length prefix (RFC 1035 §4.2.2).
    Tcp,
}

/// Configuration of a DNS probe (the `dns:` key of a check).
///
/// ```yaml
/// dns:
///   server: 192.0.2.53        # port 53 by default
///   query: www.example.com
///   record_type: AAAA         # default A
///   transport: udp            # or tcp
///   valid_rcodes: [NOERROR]   # the default
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The DNS server to query: an IP address with an optional port, e.g. `192.0.2.53`,
    /// `192.0.2.53:5353`, `2001:db8::53` or `[2001:db8::53]:53`. The port defaults to 53. A host name
    /// is rejected: the probe measures this server, not the node's resolver.
    pub server: String,
    /// The name to look up, e.g. `www.example.com`. Always absolute: no search domains are applied.
    pub query: String,
    /// The record type to ask for: `A` (default), `AAAA`, `CNAME`, `MX`, `TXT`, `NS`, `SOA`, `SRV`,
    /// `PTR`, or any other type name hickory knows (case-insensitive).
    #[serde(default = "default_record_type")]
    pub record_type: String,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub transport: DnsTransport,
    /// Whether to set the RD (recursion desired) bit; default `true`. Set `false` to probe an
    /// authoritative server exactly as a recursive resolver would ask it.
    #[serde(default = "default_true")]
    pub recursion_desired: bool,
    /// Response codes that count as success, by mnemonic (`NOERROR`, `NXDOMAIN`, `SERVFAIL`,
    /// `REFUSED`, … or `RCODE<n>`); default `[NOERROR]`.
    #[serde(default = "default_valid_rcodes")]
    pub valid_rcodes: Vec<String>,
}

fn default_record_type() -> String {
    "A".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_valid_rcodes() -> Vec<String> {
    vec!["NOERROR".to_owned()]
}

impl Default for DnsConfig {
    /// An A query for the root over UDP to 127.0.0.1:53, with the serde defaults.
    fn default() -> Self {
        DnsConfig {
            server: "127.0.0.1".to_owned(),
            query: ".".to_owned(),
            record_type: default_record_type(),
            transport: DnsTransport::default(),
            recursion_desired: true,
            valid_rcodes: default_valid_rcodes(),
        }
    }
}

/// A validated DNS prober.
#[derive(Debug)]
pub struct DnsProber {
    cfg: DnsConfig,
    server: SocketAddr,
    name: Name,
    record_type: RecordType,
    valid_rcodes: Vec<u16>,
}

impl DnsProber {
    /// Validates `cfg`.
    ///
    /// Errors: `server` is not an IP address with an optional port; `query` is not a valid domain
    /// name; `record_type` is unknown; `valid_rcodes` is empty or names an unknown code.
    pub fn new(cfg: DnsConfig) -> Result<Self, ConfigError> {
        let server = parse_server(&cfg.server)?;
        let mut name = Name::from_ascii(cfg.query.trim()).map_err(|e| {
            ConfigError(format!(
                "dns query {:?} is not a valid domain name: {e}",
                cfg.query
            ))
        })?;
        name.set_fqdn(true);
        let record_type = cfg.record_type.trim().to_ascii_uppercase();
        let record_type = record_type.parse::<RecordType>().map_err(|_| {
            let known = "A, AAAA, CNAME, MX, TXT, NS, SOA, SRV, PTR, …";
            ConfigError(format!(
                "unknown dns record_type {:?}; expected {known}",
                cfg.record_type
            ))
        })?;
        if cfg.valid_rcodes.is_empty() {
            let message = "dns valid_rcodes is empty; list at least one, e.g. [NOERROR]";
            return Err(ConfigError(message.to_owned()));
        }
        let valid_rcodes = cfg
            .valid_rcodes
            .iter()
            .map(|text| {
                present::parse_rcode(text).ok_or_else(|| {
                    let known = present::known_rcodes();
                    ConfigError(format!(
                        "unknown dns response code {text:?} in valid_rcodes; expected {known} or RCODE<n>"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DnsProber {
            cfg,
            server,
            name,
            record_type,
            valid_rcodes,
        })
    }

    /// The target in RFC 4501 URI form: `dns://192.0.2.53:53/www.example.com.?type=A` (with
    /// `;transport=tcp` appended for TCP).
    pub fn target(&self) -> String {
        let transport = match self.cfg.transport {
            DnsTransport::Udp => "",
            DnsTransport::Tcp => ";transport=tcp",
        };
        format!(
            "dns://{}/{}?type={}{transport}",
            self.server, self.name, self.record_type
        )
    }

    /// Sends one query and waits for the matching response, bounded by `timeout`. See the module
    /// documentation for the outcomes.
    pub async fn probe(&self, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut details = DnsDetails {
            server: Some(self.server),
            query: self.name.to_string(),
            record_type: self.record_type.to_string(),
            ..DnsDetails::default()
        };

        // `Message::query` draws the id from the thread-local CSPRNG (RFC 5452 §9.2).
        let mut query = Message::query();
        query.metadata.recursion_desired = self.cfg.recursion_desired;
        query.add_query(Query::query(self.name.clone(), self.record_type));
        let wire = match query.to_vec() {
            Ok(wire) => wire,
            Err(e) => {
                let message = format!("cannot encode the query for {}: {e}", self.name);
                return Outcome::fail(
                    Reason::Error,
                    message,
                    start.elapsed(),
                    vec![],
                    Details::Dns(details),
                );
            }
        };

        let result = match self.cfg.transport {
            DnsTransport::Udp => exchange::udp(self.server, &query, &wire, deadline).await,
            DnsTransport::Tcp => exchange::tcp(self.server, &query, &wire, deadline).await,
        };
        let elapsed = start.elapsed();
        let exchange = match result {
            Ok(exchange) => exchange,
            Err(e) => {
                let message = format!(
                    "{} {} query to {}: {e}",
                    self.name, self.record_type, self.server
                );
                return Outcome::fail(e.reason(), message, elapsed, vec![], Details::Dns(details));
            }
        };

        let phases = vec![PhaseTiming {
            phase: Phase::Query,
            duration: elapsed,
        }];
        let code = exchange.response.metadata.response_code;
        let rcode = present::rcode_name(code);
        details.rcode = Some(rcode.clone());
        details.answers = exchange
            .response
            .answers
            .iter()
            .map(present::record_text)
            .collect();
        details.tcp_fallback = exchange.tcp_fallback;
        let answers = details.answers.len();
        if self.valid_rcodes.contains(&present::rcode_value(code)) {
            let message = format!(
                "{rcode} with {answers} answer(s) for {} {}",
                self.name, self.record_type
            );
            Outcome::ok(message, elapsed, phases, Details::Dns(details))
        } else {
            let message = format!(
                "server {} answered {rcode} for {} {} (valid: {})",
                self.server,
                self.name,
                self.record_type,
                self.cfg.valid_rcodes.join(", ")
            );
            Outcome::fail(
                Reason::DnsError,
                message,
                elapsed,
                phases,
                Details::Dns(details),
            )
        }
    }
}

/// Parses `ip`, `ip:port`, bare IPv6 or `[ipv6]:port`; the port defaults to 53.
fn parse_server(text: &str) -> Result<SocketAddr, ConfigError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, 53)),
        Err(_) => Err(ConfigError(format!(
            "dns server {text:?} is not an IP address with an optional port; expected e.g. 192.0.2.53, \
             192.0.2.53:5353 or [2001:db8::53]:53"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(server: &str) -> DnsConfig {
        DnsConfig {
            server: server.to_owned(),
            query: "www.example.com".to_owned(),
            ..DnsConfig::default()
        }
    }

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server("192.0.2.53").unwrap(),
            "192.0.2.53:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("192.0.2.53:5353").unwrap(),
            "192.0.2.53:5353".parse().unwrap()
        );
        assert_eq!(
            parse_server("2001:db8::53").unwrap(),
            "[2001:db8::53]:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("[2001:db8::53]").unwrap(),
            "[2001:db8::53]:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("[2001:db8::53]:5353").unwrap(),
            "[2001:db8::53]:5353".parse().unwrap()
        );
        assert!(parse_server("dns.example.com").is_err());
        assert!(parse_server("192.0.2.53:99999").is_err());
    }

    #[test]
    fn validation_and_defaults() {
        let yaml = r#"{"server": "192.0.2.53", "query": "www.example.com"}"#;
        let parsed: DnsConfig = serde_json::from_str(yaml).unwrap();
        assert_eq!(parsed, cfg("192.0.2.53"));
        let p = DnsProber::new(parsed).unwrap();
        assert_eq!(p.target(), "dns://192.0.2.53:53/www.example.com.?type=A");
        assert_eq!(p.valid_rcodes, vec![0]);

        let unknown =
            serde_json::from_str::<DnsConfig>(r#"{"server": "x", "query": "y", "qtype": "A"}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));

        let bad_type = DnsConfig {
            record_type: "AAAAA".to_owned(),
            ..cfg("192.0.2.53")
        };
        assert!(
            DnsProber::new(bad_type)
                .unwrap_err()
                .0
                .contains("record_type")
        );
        let lower = DnsConfig {
            record_type: "aaaa".to_owned(),
            transport: DnsTransport::Tcp,
            ..cfg("192.0.2.53")
        };
        assert_eq!(
            DnsProber::new(lower).unwrap().target(),
            "dns://192.0.2.53:53/www.example.com.?type=AAAA;transport=tcp"
        );
        let bad_rcode = DnsConfig {
            valid_rcodes: vec!["NOPE".to_owned()],
            ..cfg("192.0.2.53")
        };
        assert!(DnsProber::new(bad_rcode).unwrap_err().0.contains("NOPE"));
        let empty = DnsConfig {
            valid_rcodes: vec![],
            ..cfg("192.0.2.53")
        };
        assert!(DnsProber::new(empty).is_err());
        let bad_name = DnsConfig {
            query: "a..b".to_owned(),
            ..cfg("192.0.2.53")
        };
        assert!(DnsProber::new(bad_name).is_err());
    }
}
