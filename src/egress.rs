//! Where outgoing callbacks may go (a leaf). By default nothing inside the network: loopback,
//! link-local (169.254.0.0/16 holds the cloud metadata service), private, unique-local, CGNAT,
//! unspecified, broadcast and multicast addresses are refused, so a callback URL cannot be aimed at the
//! server's own neighbourhood (SSRF). `[notify] allowed_destinations` lists CIDR ranges and host names that
//! on-premises receivers use. The check runs when a URL is configured (the API refuses it) and again at
//! every connect, on the addresses DNS returned, so a DNS answer that changes cannot get past it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// The allowed exceptions; cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    nets: Arc<Vec<IpNet>>,
    hosts: Arc<Vec<String>>,
}

impl Destinations {
    /// Parses `allowed_destinations`: each entry a CIDR range (`127.0.0.0/8`), an address, or a host name.
    pub fn parse(entries: &[String]) -> Result<Destinations, String> {
        let mut nets = Vec::new();
        let mut hosts = Vec::new();
        for e in entries {
            let e = e.trim();
            if let Ok(net) = e.parse::<IpNet>() {
                nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                nets.push(IpNet::from(ip));
            } else if !e.is_empty()
                && e.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            {
                hosts.push(e.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "allowed_destinations entry {e:?} is neither a CIDR range, an address nor a host name"
                ));
            }
        }
        Ok(Destinations { nets: Arc::new(nets), hosts: Arc::new(hosts) })
    }

    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip)) || !is_internal(ip)
    }

    /// The configuration-time check of a callback URL: its host is allowed by name, or every address it
    /// resolves to is allowed. A name that does not resolve (yet) passes here; the connect-time check
    /// still applies.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let host = parsed.host_str().ok_or_else(|| format!("{url} has no host"))?;
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return self.check_ip(url, ip);
        }
        let host = host.to_owned();
        if self.host_allowed(&host) {
            return Ok(());
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        let resolved =
            tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host((host.as_str(), port))).await;
        if let Ok(Ok(addrs)) = resolved {
            for a in addrs {
                self.check_ip(url, a.ip())?;
            }
        }
        Ok(())
    }

    fn check_ip(&self, url: &str, ip: IpAddr) -> Result<(), String> {
        if self.ip_allowed(ip) {
            Ok(())
        } else {
            Err(format!(
                "{url} reaches an internal address ({ip}); list it in [notify] allowed_destinations to allow it"
            ))
        }
    }
}

/// reqwest's resolver for callbacks: the system's answer, less the addresses that are not allowed.
#[derive(Debug, Clone)]
pub struct Resolver(pub Destinations);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let by_name = allowed.host_allowed(&host);
            let kept: Vec<SocketAddr> =
                addrs.iter().copied().filter(|a| by_name || allowed.ip_allowed(a.ip())).collect();
            if kept.is_empty() {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{host} resolves only to internal addresses ({}); list it in [notify] allowed_destinations to allow it",
                    shown.join(", ")
                )
                .into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses inside a network rather than on the internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        // 100.64.0.0/10: carrier-grade NAT, inside someone's network.
        || (a == 100 && (64..128).contains(&b))
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique-local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_and_listed_ones_allowed() {
        let none = Destinations::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!none.ip_allowed(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "100.128.0.1"] {
            assert!(none.ip_allowed(ip.parse().unwrap()), "{ip}");
        }
        let some = Destinations::parse(&["127.0.0.0/8".into(), "hooks.internal".into(), "fd00::5".into()]).unwrap();
        assert!(some.ip_allowed("127.9.9.9".parse().unwrap()));
        assert!(some.ip_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(some.ip_allowed("fd00::5".parse().unwrap()));
        assert!(!some.ip_allowed("fd00::6".parse().unwrap()));
        assert!(!some.ip_allowed("169.254.169.254".parse().unwrap()));
        assert!(some.host_allowed("Hooks.Internal."));
        assert!(Destinations::parse(&["not a host!".into()]).is_err());
    }

    #[tokio::test]
    async fn configured_urls_are_checked_by_address_and_by_name() {
        let none = Destinations::default();
        for url in
            ["http://127.0.0.1:9/x", "http://[::1]/x", "http://169.254.169.254/latest/meta-data", "http://localhost/x"]
        {
            let e = none.check_url(url).await.unwrap_err();
            assert!(e.contains("allowed_destinations"), "{url}: {e}");
        }
        assert!(none.check_url("http://203.0.113.7/hook").await.is_ok());
        let local = Destinations::parse(&["127.0.0.0/8".into(), "localhost".into(), "::1".into()]).unwrap();
        assert!(local.check_url("http://127.0.0.1:9/x").await.is_ok());
        assert!(local.check_url("http://localhost/x").await.is_ok());
    }
}
