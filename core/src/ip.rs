//! Client address allow-lists (`ips`): CIDR blocks and single addresses, IPv4 and IPv6.

use std::net::{IpAddr, SocketAddr};

/// One allow-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `127.0.0.1`, `fd00::/8` or `::1`. Host bits beyond the prefix
    /// are refused: `10.1.2.3/8` is more likely a typo than an intent.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) && p.len() <= 3 => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0..={max}"))?,
            Some(_) => return Err(format!("`{text}`: prefix length must be 0..={max}")),
        };
        let cidr = Cidr { addr, prefix };
        if mask(addr, prefix) != bits(addr) {
            return Err(format!("`{text}` has host bits set beyond /{prefix}"));
        }
        Ok(cidr)
    }

    /// Whether `ip` falls inside this block. IPv4-mapped IPv6 clients count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        mask(ip, self.prefix) == bits(self.addr)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(ip: IpAddr, prefix: u8) -> u128 {
    let width: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let host_bits = width - u32::from(prefix);
    let all = bits(ip);
    if host_bits >= 128 {
        0
    } else {
        (all >> host_bits) << host_bits
    }
}

/// Parses Envoy's `source.address` (`1.2.3.4:5678`, `[::1]:5678`, or a bare address).
pub fn parse_source_address(text: &str) -> Option<IpAddr> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    text.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        parse_source_address(s).unwrap_or_else(|| IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn v4_blocks() {
        let c = Cidr::parse("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("[::ffff:10.1.1.1]:80")));
        let single = Cidr::parse("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        assert!(single.contains(ip("127.0.0.1:4444")));
        assert!(!single.contains(ip("127.0.0.2:4444")));
        let any = Cidr::parse("0.0.0.0/0").unwrap_or_else(|e| panic!("{e}"));
        assert!(any.contains(ip("8.8.8.8")));
        assert!(!any.contains(ip("[::1]:1")));
    }

    #[test]
    fn v6_blocks() {
        let c = Cidr::parse("fd00::/8").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.contains(ip("[fd12::1]:443")));
        assert!(!c.contains(ip("[fe80::1]:443")));
        assert!(Cidr::parse("::/0").is_ok_and(|c| c.contains(ip("::1"))));
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.1.0.0/8",
            "x",
            "10.0.0.0/+8",
            "::1/129",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
