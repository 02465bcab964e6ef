//! Name resolution shared by the probers.
//!
//! Uses the C library's resolver (`getaddrinfo` through [`tokio::net::lookup_host`]) so that
//! `/etc/hosts` and `nsswitch.conf` apply as for any other program on the node. IP literals (including
//! bracketed IPv6) never touch the resolver.

use std::net::IpAddr;

/// Address family preference when a name has both A and AAAA records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

/// Resolves `host` (a name, an IPv4 literal or an IPv6 literal with or without brackets) to one address,
/// the first of `family` when given, else the first returned (IPv4 before IPv6 as getaddrinfo orders it).
///
/// Errors: a message naming the host when resolution fails or yields no address of the wanted family.
pub async fn resolve(host: &str, family: Option<Family>) -> Result<IpAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addrs = tokio::net::lookup_host((bare, 0))
        .await
        .map_err(|e| format!("cannot resolve {bare:?}: {e}"))?;
    let mut fallback = None;
    for a in addrs {
        let ip = a.ip();
        match family {
            Some(Family::V4) if ip.is_ipv4() => return Ok(ip),
            Some(Family::V6) if ip.is_ipv6() => return Ok(ip),
            None => return Ok(ip),
            _ => fallback = fallback.or(Some(ip)),
        }
    }
    match (family, fallback) {
        (Some(f), Some(_)) => Err(format!(
            "{bare:?} has no {} address",
            if f == Family::V4 { "IPv4" } else { "IPv6" }
        )),
        _ => Err(format!("{bare:?} resolved to no address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_localhost() {
        assert_eq!(
            resolve("127.0.0.1", None).await.unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve("[::1]", None).await.unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        );
        assert!(
            resolve("localhost", Some(Family::V4))
                .await
                .unwrap()
                .is_loopback()
        );
        assert!(resolve("no-such-host.invalid", None).await.is_err());
    }
}
