//! Reading iproute2's JSON (`ip -j addr show`, `ip -j route get`). Pure: text in, values out.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One address of one interface, from `ip -j addr show` (`ifname`, `addr_info[].local`, `prefixlen`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    /// The interface name (`eth0`).
    pub iface: String,
    /// The address.
    pub addr: IpAddr,
    /// The prefix length, bits.
    pub prefix: u8,
}

/// The kernel's answer to `ip -j route get TO [from FROM]`: the route an output packet takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The route type: `unicast`, `local` (the destination is this host), `broadcast`, ….
    #[serde(rename = "type")]
    pub kind: String,
    /// The output device (`lo` for a local destination).
    pub dev: Option<String>,
    /// The preferred source address: what the kernel puts in a packet whose socket is not bound.
    pub prefsrc: Option<IpAddr>,
    /// The next hop, when the destination is not on a connected network.
    pub gateway: Option<IpAddr>,
}

/// Every address in `ip -j addr show` output. Errors: the text is not JSON or not an array.
pub fn parse_addrs(json: &str) -> Result<Vec<Addr>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let links = v.as_array().ok_or("not a JSON array of interfaces")?;
    let mut out = Vec::new();
    for link in links {
        let Some(iface) = link.get("ifname").and_then(Value::as_str) else {
            continue;
        };
        let infos = link.get("addr_info").and_then(Value::as_array);
        for info in infos.into_iter().flatten() {
            let addr = info
                .get("local")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<IpAddr>().ok());
            let prefix = info
                .get("prefixlen")
                .and_then(Value::as_u64)
                .and_then(|p| u8::try_from(p).ok());
            if let (Some(addr), Some(prefix)) = (addr, prefix) {
                out.push(Addr {
                    iface: iface.to_string(),
                    addr,
                    prefix,
                });
            }
        }
    }
    Ok(out)
}

/// Every route of `ip -j route show` / `ip -6 -j route show` output (the main table) with a
/// device, as the evaluator's host routes: `dst` `default` becomes `0.0.0.0/0` or `::/0`
/// (by `family`), a bare address a host route. Routes without a device (blackhole,
/// unreachable, multipath) are left out. Errors: not JSON, or not an array.
pub fn parse_route_table(json: &str, family: netfilter::Family) -> Result<Vec<TableRoute>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let routes = v.as_array().ok_or("not a JSON array of routes")?;
    let default = match family {
        netfilter::Family::Ipv4 => "0.0.0.0/0",
        netfilter::Family::Ipv6 => "::/0",
    };
    Ok(routes
        .iter()
        .filter_map(|r| {
            let dst = r.get("dst").and_then(Value::as_str)?;
            let dev = r.get("dev").and_then(Value::as_str)?;
            let dst = if dst == "default" { default } else { dst };
            let dst = netfilter::Cidr::parse(dst).ok()?;
            Some(TableRoute {
                dst: dst.to_string(),
                dev: dev.to_string(),
            })
        })
        .collect())
}

/// One route of the main table: destination prefix and output device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRoute {
    /// The destination prefix (`192.0.2.0/24`, `0.0.0.0/0`).
    pub dst: String,
    /// The output interface.
    pub dev: String,
}

/// The first route in `ip -j route get` output. Errors: not JSON, or no route object in it.
pub fn parse_route(json: &str) -> Result<Route, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let r = v
        .as_array()
        .and_then(|a| a.first())
        .ok_or("no route in the answer")?;
    let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
    let addr = |k: &str| text(k).and_then(|a| a.parse::<IpAddr>().ok());
    Ok(Route {
        kind: text("type").unwrap_or_else(|| "unicast".to_string()),
        dev: text("dev"),
        prefsrc: addr("prefsrc"),
        gateway: addr("gateway"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn reads_addresses_and_routes_as_iproute2_6_prints_them() {
        let addrs = parse_addrs(
            r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"},{"family":"inet6","local":"::1","prefixlen":128}]},
                {"ifindex":2,"ifname":"v0","addr_info":[{"family":"inet","local":"198.51.100.1","prefixlen":24}]},
                {"ifindex":3,"ifname":"v1","addr_info":[]}]"#,
        )
        .unwrap();
        assert_eq!(addrs.len(), 3);
        assert_eq!(addrs[2].iface, "v0");
        assert_eq!(addrs[2].addr, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(addrs[2].prefix, 24);
        let r = parse_route(
            r#"[{"type":"local","dst":"127.0.0.1","dev":"lo","prefsrc":"127.0.0.1","flags":[],"uid":0,"cache":["local"]}]"#,
        )
        .unwrap();
        assert_eq!(r.kind, "local");
        assert_eq!(r.dev.as_deref(), Some("lo"));
        let r = parse_route(
            r#"[{"dst":"203.0.113.9","gateway":"198.51.100.254","dev":"v0","prefsrc":"198.51.100.1","flags":[],"uid":0,"cache":[]}]"#,
        )
        .unwrap();
        assert_eq!(r.kind, "unicast");
        assert_eq!(r.gateway, Some("198.51.100.254".parse().unwrap()));
        assert!(parse_route("[]").is_err());
        let table = parse_route_table(
            r#"[{"dst":"default","gateway":"198.51.100.1","dev":"eth0","flags":[]},
               {"dst":"192.0.2.0/24","dev":"docker0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.1","flags":[]},
               {"dst":"192.0.2.9","dev":"cali0","scope":"link","flags":[]},
               {"type":"blackhole","dst":"203.0.113.0/24","flags":[]}]"#,
            netfilter::Family::Ipv4,
        )
        .unwrap();
        let pairs: Vec<(&str, &str)> = table
            .iter()
            .map(|r| (r.dst.as_str(), r.dev.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("0.0.0.0/0", "eth0"),
                ("192.0.2.0/24", "docker0"),
                ("192.0.2.9/32", "cali0")
            ]
        );
        assert!(parse_addrs("nope").is_err());
        assert!(parse_addrs("{}").is_err());
    }
}
