//! Reading the kubelet probes out of a Pod manifest (YAML or JSON): only what isolation needs —
//! each container's `livenessProbe`, `readinessProbe` and `startupProbe`, their handler
//! (`httpGet`, `tcpSocket`, `grpc`, `exec`) and timing, and the container's volume mounts.
//! Field names and defaults are the Kubernetes API's (core/v1 `Probe`): `initialDelaySeconds` 0,
//! `periodSeconds` 10, `timeoutSeconds` 1, `failureThreshold` 3, `successThreshold` 1.

use serde::{Deserialize, Serialize};

/// Largest manifest read (a Pod is a few kilobytes; the API server's limit on an object is ~1.5 MB).
pub const MAX_BYTES: usize = 4 << 20;

/// Why a pod manifest cannot be used. Every variant is an input error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PodSpecError {
    /// Neither YAML nor JSON, or not shaped like a Pod.
    #[error("{origin}: not a Pod manifest: {message}")]
    Parse {
        /// The file.
        origin: String,
        /// The parser's message (with line and column for YAML).
        message: String,
    },
    /// A probe port given by name (`port: http`): the name is resolved against the container's
    /// `ports[].name` by the kubelet; netprobe asks for the number so the rule is unambiguous.
    #[error(
        "{origin}: container {container} {kind} probe uses the named port {name:?}: give the port number \
         (netprobe does not resolve named ports)"
    )]
    NamedPort {
        /// The file.
        origin: String,
        /// The container.
        container: String,
        /// `liveness`, `readiness` or `startup`.
        kind: ProbeKind,
        /// The port name.
        name: String,
    },
    /// A port number outside 1..=65535.
    #[error("{origin}: container {container} {kind} probe port {port} is not in 1..=65535")]
    BadPort {
        /// The file.
        origin: String,
        /// The container.
        container: String,
        /// `liveness`, `readiness` or `startup`.
        kind: ProbeKind,
        /// The number given.
        port: i64,
    },
}

/// Which of the kubelet's three probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `livenessProbe`: failing → the kubelet kills and restarts the container.
    Liveness,
    /// `readinessProbe`: failing → the pod is marked not ready and leaves its Services' endpoints.
    Readiness,
    /// `startupProbe`: gates the other two until it succeeds once; not run again afterwards.
    Startup,
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        })
    }
}

/// How the kubelet runs a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Handler {
    /// `httpGet`: a TCP connection from the node to the pod's IP on `port`, then `GET path`.
    HttpGet {
        /// TCP port (host byte order).
        port: u16,
        /// Request path.
        path: String,
    },
    /// `tcpSocket`: a TCP connect from the node to `port`.
    TcpSocket {
        /// TCP port.
        port: u16,
    },
    /// `grpc`: `grpc.health.v1.Health/Check` over TCP to `port`.
    Grpc {
        /// TCP port.
        port: u16,
    },
    /// `exec`: a command run in the container through the runtime; no network, so isolation does
    /// not affect it.
    Exec,
}

impl Handler {
    /// The TCP port the kubelet connects to, `None` for `exec`.
    pub fn port(&self) -> Option<u16> {
        match self {
            Handler::HttpGet { port, .. }
            | Handler::TcpSocket { port }
            | Handler::Grpc { port } => Some(*port),
            Handler::Exec => None,
        }
    }
}

/// One probe with the kubelet's timing (seconds), defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The container it belongs to.
    pub container: String,
    /// Liveness, readiness or startup.
    pub kind: ProbeKind,
    /// What the kubelet does.
    pub handler: Handler,
    /// Seconds after the container started before the first probe (default 0).
    pub initial_delay_seconds: u32,
    /// Seconds between probes (default 10, minimum 1).
    pub period_seconds: u32,
    /// Seconds after which one probe counts as failed (default 1, minimum 1).
    pub timeout_seconds: u32,
    /// Consecutive failures that make the probe fail (default 3, minimum 1).
    pub failure_threshold: u32,
}

/// The parts of a Pod manifest isolation uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    /// `metadata.name`, if given.
    pub name: Option<String>,
    /// Every probe of every container, in manifest order.
    pub probes: Vec<Probe>,
    /// `(container, mountPath)` of every volume mount: files there survive a container restart.
    pub volume_mounts: Vec<(String, String)>,
    /// `(container, Unix seconds)` from `status.containerStatuses[].state.running.startedAt`
    /// (present in `kubectl get pod -o yaml` output): when each running container started.
    pub started_at: Vec<(String, u64)>,
}

#[derive(Deserialize)]
struct RawPod {
    #[serde(default)]
    metadata: RawMeta,
    spec: RawSpec,
    status: Option<RawStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    #[serde(default)]
    container_statuses: Vec<RawContainerStatus>,
}

#[derive(Deserialize)]
struct RawContainerStatus {
    name: String,
    state: Option<RawState>,
}

#[derive(Deserialize)]
struct RawState {
    running: Option<RawRunning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRunning {
    started_at: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawMeta {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawSpec {
    #[serde(default)]
    containers: Vec<RawContainer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContainer {
    name: String,
    liveness_probe: Option<RawProbe>,
    readiness_probe: Option<RawProbe>,
    startup_probe: Option<RawProbe>,
    #[serde(default)]
    volume_mounts: Vec<RawMount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMount {
    mount_path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProbe {
    http_get: Option<RawHttpGet>,
    tcp_socket: Option<RawPortOnly>,
    grpc: Option<RawPortOnly>,
    exec: Option<serde::de::IgnoredAny>,
    initial_delay_seconds: Option<u32>,
    period_seconds: Option<u32>,
    timeout_seconds: Option<u32>,
    failure_threshold: Option<u32>,
}

#[derive(Deserialize)]
struct RawHttpGet {
    port: RawPort,
    path: Option<String>,
}

#[derive(Deserialize)]
struct RawPortOnly {
    port: RawPort,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Name(String),
}

/// Parses a Pod manifest: JSON when the text starts with `{`, YAML otherwise. `origin` names the
/// file in errors. A manifest without probes is not an error here (see [`PodSpec::probes`]).
pub fn parse(text: &str, origin: &str) -> Result<PodSpec, PodSpecError> {
    if text.len() > MAX_BYTES {
        return Err(PodSpecError::Parse {
            origin: origin.to_string(),
            message: format!("larger than {MAX_BYTES} bytes"),
        });
    }
    let raw: RawPod = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| PodSpecError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?
    } else {
        serde_saphyr::from_str(text).map_err(|e| PodSpecError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?
    };
    let mut probes = Vec::new();
    let mut volume_mounts = Vec::new();
    for c in raw.spec.containers {
        let all = [
            (ProbeKind::Liveness, c.liveness_probe),
            (ProbeKind::Readiness, c.readiness_probe),
            (ProbeKind::Startup, c.startup_probe),
        ];
        for (kind, p) in all.into_iter().filter_map(|(k, p)| p.map(|p| (k, p))) {
            probes.push(probe(origin, &c.name, kind, p)?);
        }
        volume_mounts.extend(
            c.volume_mounts
                .into_iter()
                .map(|m| (c.name.clone(), m.mount_path)),
        );
    }
    let started_at = raw
        .status
        .map(|s| s.container_statuses)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let at = c.state?.running?.started_at?;
            let t = humantime::parse_rfc3339_weak(&at).ok()?;
            let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
            Some((c.name, secs))
        })
        .collect();
    Ok(PodSpec {
        name: raw.metadata.name,
        probes,
        volume_mounts,
        started_at,
    })
}

fn probe(
    origin: &str,
    container: &str,
    kind: ProbeKind,
    p: RawProbe,
) -> Result<Probe, PodSpecError> {
    let port = |raw: RawPort| -> Result<u16, PodSpecError> {
        match raw {
            RawPort::Name(name) => Err(PodSpecError::NamedPort {
                origin: origin.to_string(),
                container: container.to_string(),
                kind,
                name,
            }),
            RawPort::Number(n) => match u16::try_from(n) {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(PodSpecError::BadPort {
                    origin: origin.to_string(),
                    container: container.to_string(),
                    kind,
                    port: n,
                }),
            },
        }
    };
    let handler = if let Some(h) = p.http_get {
        Handler::HttpGet {
            port: port(h.port)?,
            path: h.path.unwrap_or_else(|| "/".to_string()),
        }
    } else if let Some(t) = p.tcp_socket {
        Handler::TcpSocket {
            port: port(t.port)?,
        }
    } else if let Some(g) = p.grpc {
        Handler::Grpc {
            port: port(g.port)?,
        }
    } else if p.exec.is_some() {
        Handler::Exec
    } else {
        return Err(PodSpecError::Parse {
            origin: origin.to_string(),
            message: format!(
                "container {container} {kind} probe has no handler (httpGet, tcpSocket, grpc or exec)"
            ),
        });
    };
    Ok(Probe {
        container: container.to_string(),
        kind,
        handler,
        initial_delay_seconds: p.initial_delay_seconds.unwrap_or(0),
        period_seconds: p.period_seconds.unwrap_or(10).max(1),
        timeout_seconds: p.timeout_seconds.unwrap_or(1).max(1),
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    const YAML: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    \
        livenessProbe:\n      httpGet:\n        path: /healthz\n        port: 8080\n      periodSeconds: 5\n    \
        readinessProbe:\n      tcpSocket:\n        port: 8080\n    volumeMounts:\n    - name: data\n      mountPath: /data\n";

    #[test]
    fn yaml_and_json_with_defaults() {
        let p = parse(YAML, "pod.yaml").unwrap();
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.probes.len(), 2);
        assert_eq!(
            p.probes[0].handler,
            Handler::HttpGet {
                port: 8080,
                path: "/healthz".into()
            }
        );
        assert_eq!(p.probes[0].period_seconds, 5);
        assert_eq!(p.probes[1].failure_threshold, 3);
        assert_eq!(p.probes[1].timeout_seconds, 1);
        assert_eq!(p.volume_mounts, [("app".to_string(), "/data".to_string())]);
        assert!(p.started_at.is_empty());
        let with_status = format!(
            "{YAML}status:\n  containerStatuses:\n  - name: app\n    state:\n      running:\n        startedAt: \"2026-11-27T10:00:00Z\"\n"
        );
        let p = parse(&with_status, "pod.yaml").unwrap();
        assert_eq!(p.started_at, [("app".to_string(), 1_795_773_600)]);
        let json = r#"{"spec":{"containers":[{"name":"a","livenessProbe":{"grpc":{"port":9090},"failureThreshold":5}}]}}"#;
        let p = parse(json, "pod.json").unwrap();
        assert_eq!(p.probes[0].handler, Handler::Grpc { port: 9090 });
        assert_eq!(p.probes[0].failure_threshold, 5);
    }

    #[test]
    fn named_and_bad_ports_and_garbage_are_errors() {
        let named = YAML.replace(
            "port: 8080\n      periodSeconds",
            "port: http\n      periodSeconds",
        );
        let e = parse(&named, "pod.yaml").unwrap_err().to_string();
        assert!(e.contains("named port \"http\""), "{e}");
        let bad = YAML.replace("port: 8080\n    volume", "port: 70000\n    volume");
        let e = parse(&bad, "pod.yaml").unwrap_err().to_string();
        assert!(e.contains("70000"), "{e}");
        assert!(parse("{nope", "x").is_err());
        assert!(parse("- a\n- b\n", "x").is_err());
        let none = parse("spec:\n  containers:\n  - name: a\n", "x").unwrap();
        assert!(none.probes.is_empty());
    }
}
