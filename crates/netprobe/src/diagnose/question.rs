//! The question a diagnosis answers: which flow a check sends (protocol, destination, port and
//! any explicit source), taken from a check target as `netprobe check` reads it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};

use serde::{Deserialize, Serialize};

/// The transport of the check's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// ICMP / ICMPv6 echo request.
    Icmp,
    /// A TCP SYN (tcp, http, https, grpc).
    Tcp,
    /// A UDP datagram (dns).
    Udp,
}

impl Protocol {
    /// `icmp`, `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Icmp => "icmp",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Why the flow has the source address it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceReason {
    /// The check's socket is bound to it (`--source`).
    ExplicitBind,
    /// The kernel's route lookup chose it (the route's preferred source, `src`).
    Route {
        /// The route, as `ip route` shows it.
        route: String,
    },
}

/// A check's flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// The target as given (`tcp://127.0.0.2:9099`).
    pub target: String,
    /// The first packet's protocol.
    pub protocol: Protocol,
    /// The destination address (a host name is resolved once).
    pub dst: IpAddr,
    /// The destination port (TCP/UDP).
    pub dport: Option<u16>,
    /// The source address the check's socket is bound to, if any.
    pub source: Option<IpAddr>,
}

/// Why a target cannot be turned into a flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuestionError {
    /// Not one of the target forms.
    #[error("{0}")]
    Form(String),
    /// The host name does not resolve.
    #[error("cannot resolve {host}: {message}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        message: String,
    },
}

/// Splits `HOST[:PORT]` (`[v6]:port` too).
fn host_port(s: &str) -> Result<(String, Option<u16>), QuestionError> {
    let bad = || QuestionError::Form(format!("{s:?} is not HOST[:PORT]"));
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let p = match after.strip_prefix(':') {
            Some(p) => Some(port(p)?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        return Ok((h.to_string(), p));
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok((s.to_string(), None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), Some(port(p)?))),
        None => Ok((s.to_string(), None)),
    }
}

fn resolve(host: &str) -> Result<IpAddr, QuestionError> {
    if host.is_empty() {
        return Err(QuestionError::Form("the target has no host".into()));
    }
    if let Ok(a) = host.parse() {
        return Ok(a);
    }
    let addrs: Vec<SocketAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| QuestionError::Resolve {
            host: host.to_string(),
            message: e.to_string(),
        })?
        .collect();
    addrs
        .first()
        .map(SocketAddr::ip)
        .ok_or_else(|| QuestionError::Resolve {
            host: host.to_string(),
            message: "no address".into(),
        })
}

impl Question {
    /// The flow of a check target: `icmp://HOST`, `tcp://HOST:PORT`, `http(s)://HOST[:PORT]/…`
    /// (port 80/443 by default), `dns://SERVER[:PORT]/NAME` (UDP, port 53), `grpc://HOST:PORT`.
    /// A host name is resolved (first address).
    pub fn from_target(target: &str, source: Option<IpAddr>) -> Result<Question, QuestionError> {
        let (scheme, rest) = target.split_once("://").ok_or_else(|| {
            QuestionError::Form(format!(
                "target {target:?} has no scheme; expected icmp://HOST, tcp://HOST:PORT, http://…, dns://…, grpc://…"
            ))
        })?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = host_port(authority)?;
        let (protocol, dport) = match scheme {
            "icmp" => {
                if port.is_some() {
                    return Err(QuestionError::Form("icmp://HOST takes no port".into()));
                }
                (Protocol::Icmp, None)
            }
            "tcp" | "grpc" => (
                Protocol::Tcp,
                Some(port.ok_or_else(|| {
                    QuestionError::Form(format!(
                        "{scheme} target needs a port: {scheme}://HOST:PORT"
                    ))
                })?),
            ),
            "http" => (Protocol::Tcp, Some(port.unwrap_or(80))),
            "https" => (Protocol::Tcp, Some(port.unwrap_or(443))),
            "dns" => (Protocol::Udp, Some(port.unwrap_or(53))),
            other => {
                return Err(QuestionError::Form(format!(
                    "unknown scheme {other:?}; expected icmp, tcp, http, https, dns or grpc"
                )));
            }
        };
        let dst = resolve(&host)?;
        if let Some(s) = source
            && s.is_ipv4() != dst.is_ipv4()
        {
            return Err(QuestionError::Form(format!(
                "--source {s} and the destination {dst} are of different address families"
            )));
        }
        Ok(Question {
            target: target.to_string(),
            protocol,
            dst,
            dport,
            source,
        })
    }
}

impl Question {
    /// The flow of a configured check (`netprobe run`): its target written as `netprobe check`
    /// takes it, then [`Question::from_target`]. Errors: an exec check (no flow), or a target
    /// that does not resolve.
    pub fn from_spec(spec: &crate::config::ProbeSpec) -> Result<Question, QuestionError> {
        use crate::config::ProbeSpec;
        let target = match spec {
            ProbeSpec::Icmp(c) => format!("icmp://{}", c.host),
            ProbeSpec::Tcp(c) => format!("tcp://{}", c.address),
            ProbeSpec::Http(c) => c.url.clone(),
            ProbeSpec::Dns(c) => {
                let server = match c.server.parse::<IpAddr>() {
                    Ok(IpAddr::V6(a)) => format!("[{a}]"),
                    _ => c.server.clone(),
                };
                format!("dns://{server}/{}", c.query)
            }
            ProbeSpec::Grpc(c) => format!("grpc://{}", c.address),
            ProbeSpec::Exec(_) => {
                return Err(QuestionError::Form(
                    "an exec check sends no packet of its own: nothing to diagnose".into(),
                ));
            }
        };
        Question::from_target(&target, None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn reads_every_target_form() {
        let q = Question::from_target("tcp://127.0.0.2:9099", None).unwrap();
        assert_eq!((q.protocol, q.dport), (Protocol::Tcp, Some(9099)));
        assert_eq!(q.dst, "127.0.0.2".parse::<IpAddr>().unwrap());
        let q = Question::from_target("http://[fd00::1]/healthz", None).unwrap();
        assert_eq!(q.dport, Some(80));
        assert_eq!(q.dst, "fd00::1".parse::<IpAddr>().unwrap());
        let q = Question::from_target("https://192.0.2.1:8443/x?y=1", None).unwrap();
        assert_eq!(q.dport, Some(8443));
        let q = Question::from_target("dns://192.0.2.53/example.test?type=A", None).unwrap();
        assert_eq!((q.protocol, q.dport), (Protocol::Udp, Some(53)));
        let q = Question::from_target("icmp://fd00::2", None).unwrap();
        assert_eq!(q.protocol, Protocol::Icmp);
        assert_eq!(q.dst, "fd00::2".parse::<IpAddr>().unwrap());
        let q = Question::from_target("grpc://198.51.100.1:50051/svc", None).unwrap();
        assert_eq!(q.dport, Some(50051));
        assert!(Question::from_target("tcp://127.0.0.1", None).is_err());
        assert!(Question::from_target("127.0.0.1", None).is_err());
        assert!(Question::from_target("ftp://127.0.0.1", None).is_err());
        assert!(Question::from_target("tcp://127.0.0.1:99999", None).is_err());
        assert!(
            Question::from_target("tcp://127.0.0.1:1", Some("fd00::1".parse().unwrap())).is_err()
        );
        let spec =
            crate::oneshot::parse_target("dns://[fd00::53]:5353/a.test", None, false).unwrap();
        let q = Question::from_spec(&spec).unwrap();
        assert_eq!((q.protocol, q.dport), (Protocol::Udp, Some(5353)));
        let spec = crate::oneshot::parse_target("dns://fd00::53/a.test", None, false);
        if let Ok(spec) = spec {
            assert_eq!(Question::from_spec(&spec).unwrap().dport, Some(53));
        }
        let spec = crate::oneshot::parse_target("http://192.0.2.1/x", None, false).unwrap();
        assert_eq!(Question::from_spec(&spec).unwrap().dport, Some(80));
    }
}
