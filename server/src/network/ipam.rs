//! Address arithmetic for subnets, without I/O: CIDR parsing and normalisation as Neutron does
//! it, default gateway and allocation pools, pool validation, EUI-64 addresses, MAC parsing, and
//! the sortable key under which allocations are stored.
//!
//! Addresses are handled as `u128` (IPv4 in the low 32 bits) so both families share one code
//! path; [`key`] renders one as 32 zero-padded hex digits, whose string order is numeric order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::store::network::NetError;

/// An inclusive address range (an allocation pool), as numbers.
pub type Range = (u128, u128);

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, version: u8) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

pub fn version_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 4 } else { 6 }
}

pub fn net_version(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

/// The stored, index-ordered form of an address.
pub fn key(v: u128) -> String {
    format!("{v:032x}")
}

pub fn parse_key(s: &str) -> Option<u128> {
    u128::from_str_radix(s, 16).ok()
}

/// First and last address of a network (network and broadcast address for IPv4).
pub fn bounds(net: &IpNet) -> Range {
    (to_u128(net.network()), to_u128(net.broadcast()))
}

/// Parses a CIDR the way Neutron validates a route or address-pair CIDR: a prefix is required
/// and host bits must be clear; the result is normalised (`FD00:0::/64` → `fd00::/64`).
pub fn parse_cidr(field: &str, s: &str) -> Result<IpNet, NetError> {
    let net = parse_net(field, s)?;
    let canon = net.trunc();
    if canon != net {
        let why = format!("'{s}' isn't a recognized IP subnet cidr, '{canon}' is recommended");
        return Err(NetError::bad_request(format!("Invalid input for {field}. Reason: {why}.")));
    }
    Ok(canon)
}

/// Parses a subnet's `cidr` as Neutron does: a prefix is required, but host bits may be set
/// (`10.99.99.0/16`); the subnet gets the network they belong to (`10.99.0.0/16`).
pub fn parse_subnet_cidr(field: &str, s: &str) -> Result<IpNet, NetError> {
    Ok(parse_net(field, s)?.trunc())
}

/// An address with a prefix length, host bits as given.
fn parse_net(field: &str, s: &str) -> Result<IpNet, NetError> {
    let bad = |why: String| NetError::bad_request(format!("Invalid input for {field}. Reason: {why}."));
    if s.trim() != s || s.is_empty() {
        return Err(bad(format!("'{s}' is not a valid IP subnet")));
    }
    if !s.contains('/') {
        return match s.parse::<IpAddr>() {
            Ok(ip) => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                Err(bad(format!("'{s}' isn't a recognized IP subnet cidr, '{ip}/{len}' is recommended")))
            }
            Err(_) => Err(bad(format!("'{s}' is not a valid IP subnet"))),
        };
    }
    s.parse().map_err(|_| bad(format!("'{s}' is not a valid IP subnet")))
}

/// Parses an IP address attribute.
pub fn parse_ip(field: &str, s: &str) -> Result<IpAddr, NetError> {
    s.parse::<IpAddr>().map_err(|_| {
        NetError::bad_request(format!("Invalid input for {field}. Reason: '{s}' is not a valid IP address."))
    })
}

/// Neutron's default gateway: the first address after the network address.
pub fn default_gateway(net: &IpNet) -> Option<IpAddr> {
    let (first, last) = bounds(net);
    (first < last).then(|| from_u128(first + 1, net_version(net)))
}

/// Neutron's default pools (`ipam.utils.generate_pools`): the whole range minus the network
/// address, minus the broadcast address on IPv4, minus the gateway.
pub fn default_pools(net: &IpNet, gateway: Option<IpAddr>) -> Vec<Range> {
    let (first, last) = bounds(net);
    if first == last {
        return vec![(first, last)];
    }
    let lo = first + 1;
    let hi = if net_version(net) == 4 { last - 1 } else { last };
    if lo >= hi {
        return Vec::new();
    }
    match gateway.map(to_u128) {
        Some(g) if g >= lo && g <= hi => {
            let mut out = Vec::new();
            if g > lo {
                out.push((lo, g - 1));
            }
            if g < hi {
                out.push((g + 1, hi));
            }
            out
        }
        _ => vec![(lo, hi)],
    }
}

/// The usable range pools may cover: IPv4 excludes the network and broadcast addresses.
fn pool_bounds(net: &IpNet) -> Range {
    let (first, last) = bounds(net);
    if net_version(net) == 4 && last - first >= 2 { (first + 1, last - 1) } else { (first, last) }
}

pub fn range_str(r: Range, version: u8) -> String {
    format!("{}-{}", from_u128(r.0, version), from_u128(r.1, version))
}

/// Checks user-given pools against the subnet and its gateway (Neutron's
/// `validate_allocation_pools` and gateway checks).
pub fn validate_pools(net: &IpNet, pools: &[Range], gateway: Option<IpAddr>) -> Result<(), NetError> {
    let v = net_version(net);
    let (lo, hi) = pool_bounds(net);
    for &p in pools {
        if p.0 > p.1 {
            return Err(NetError::fault(
                400,
                "InvalidAllocationPool",
                format!("The allocation pool {} is not valid.", range_str(p, v)),
            ));
        }
        if p.0 < lo || p.1 > hi {
            return Err(NetError::fault(
                400,
                "OutOfBoundsAllocationPool",
                format!("The allocation pool {} spans beyond the subnet cidr {net}.", range_str(p, v)),
            ));
        }
    }
    let mut sorted: Vec<Range> = pools.to_vec();
    sorted.sort();
    for w in sorted.windows(2) {
        if w[1].0 <= w[0].1 {
            return Err(NetError::conflict(
                "OverlappingAllocationPools",
                format!(
                    "Found overlapping allocation pools: {} {} for subnet {net}.",
                    range_str(w[0], v),
                    range_str(w[1], v)
                ),
            ));
        }
    }
    if let Some(g) = gateway {
        let gv = to_u128(g);
        if let Some(p) = pools.iter().find(|p| gv >= p.0 && gv <= p.1) {
            return Err(NetError::conflict(
                "GatewayConflictWithAllocationPools",
                format!("Gateway ip {g} conflicts with allocation pool {}.", range_str(*p, v)),
            ));
        }
    }
    Ok(())
}

/// A gateway must lie inside the subnet and, on IPv4, be neither its network nor its
/// broadcast address.
pub fn validate_gateway(net: &IpNet, gateway: IpAddr) -> Result<(), NetError> {
    let v = net_version(net);
    if version_of(&gateway) != v {
        return Err(NetError::invalid_input(format!("gateway_ip '{gateway}' does not match the ip_version '{v}'")));
    }
    if !net.contains(&gateway) {
        return Err(NetError::invalid_input(format!("Gateway IP {gateway} is not in subnet {net}")));
    }
    let (first, last) = bounds(net);
    let g = to_u128(gateway);
    if v == 4 && last - first >= 2 && (g == first || g == last) {
        return Err(NetError::invalid_input("Gateway is not valid on subnet".to_string()));
    }
    Ok(())
}

/// Whether `ip` may be a port's fixed IP on `net` (Neutron's `check_subnet_ip`): inside, and not
/// the network address (nor the IPv4 broadcast address).
pub fn valid_port_ip(net: &IpNet, ip: IpAddr) -> bool {
    if version_of(&ip) != net_version(net) || !net.contains(&ip) {
        return false;
    }
    let (first, last) = bounds(net);
    let v = to_u128(ip);
    if first == last {
        return true;
    }
    if net_version(net) == 4 { v != first && v != last } else { v != first }
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    net_version(a) == net_version(b) && (a.contains(&b.network()) || b.contains(&a.network()))
}

/// Parses a MAC address (`:` or `-` separated, any case); multicast and all-zero addresses
/// are refused, as Neutron does.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        out[i] = u8::from_str_radix(p, 16).ok()?;
    }
    if out[0] & 1 == 1 || out == [0u8; 6] {
        return None;
    }
    Some(out)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The modified EUI-64 address a SLAAC host derives from its MAC in a /64.
pub fn eui64(net: &IpNet, mac: &[u8; 6]) -> IpAddr {
    let iid = u64::from_be_bytes([mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]]);
    let prefix = to_u128(net.network()) & !u128::from(u64::MAX);
    from_u128(prefix | u128::from(iid), 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn cidrs_are_validated_and_normalised() {
        assert_eq!(parse_cidr("cidr", "10.0.0.0/24").expect("ok").to_string(), "10.0.0.0/24");
        assert_eq!(parse_cidr("cidr", "FD00:0::/64").expect("ok").to_string(), "fd00::/64");
        let err = parse_cidr("cidr", "10.0.0.5/24").expect_err("host bits");
        assert!(err.to_string().contains("'10.0.0.0/24' is recommended"), "{err}");
        assert!(parse_cidr("cidr", "10.0.0.0").is_err());
        assert!(parse_cidr("cidr", "nonsense/8").is_err());
        // A subnet's cidr may have host bits set: the subnet is the network they belong to.
        assert_eq!(parse_subnet_cidr("cidr", "10.99.99.0/16").expect("ok").to_string(), "10.99.0.0/16");
        assert_eq!(parse_subnet_cidr("cidr", "FD00::1/64").expect("ok").to_string(), "fd00::/64");
        assert!(parse_subnet_cidr("cidr", "10.0.0.0").is_err());
    }

    #[test]
    fn default_pools_follow_neutron() {
        let n = net("10.0.0.0/24");
        let gw = default_gateway(&n);
        assert_eq!(gw, Some("10.0.0.1".parse().expect("ip")));
        let pools = default_pools(&n, gw);
        assert_eq!(pools.iter().map(|p| range_str(*p, 4)).collect::<Vec<_>>(), vec!["10.0.0.2-10.0.0.254"]);
        // A gateway in the middle splits the range.
        let pools = default_pools(&n, Some("10.0.0.100".parse().expect("ip")));
        assert_eq!(
            pools.iter().map(|p| range_str(*p, 4)).collect::<Vec<_>>(),
            vec!["10.0.0.1-10.0.0.99", "10.0.0.101-10.0.0.254"]
        );
        let v6 = net("fd00::/64");
        let pools = default_pools(&v6, default_gateway(&v6));
        assert_eq!(range_str(pools[0], 6), "fd00::2-fd00::ffff:ffff:ffff:ffff");
        assert!(default_pools(&net("10.0.0.0/31"), None).is_empty());
    }

    #[test]
    fn pools_are_checked() {
        let n = net("10.0.0.0/24");
        let r = |a: &str, b: &str| (to_u128(a.parse().expect("ip")), to_u128(b.parse().expect("ip")));
        assert!(validate_pools(&n, &[r("10.0.0.10", "10.0.0.20")], Some("10.0.0.1".parse().expect("ip"))).is_ok());
        assert!(validate_pools(&n, &[r("10.0.0.0", "10.0.0.20")], None).is_err());
        assert!(validate_pools(&n, &[r("10.0.0.20", "10.0.0.10")], None).is_err());
        assert!(validate_pools(&n, &[r("10.0.0.10", "10.0.1.20")], None).is_err());
        assert!(validate_pools(&n, &[r("10.0.0.10", "10.0.0.20"), r("10.0.0.15", "10.0.0.30")], None).is_err());
        assert!(validate_pools(&n, &[r("10.0.0.1", "10.0.0.20")], Some("10.0.0.1".parse().expect("ip"))).is_err());
    }

    #[test]
    fn port_ips_and_gateways() {
        let n = net("10.0.0.0/24");
        assert!(valid_port_ip(&n, "10.0.0.5".parse().expect("ip")));
        assert!(!valid_port_ip(&n, "10.0.0.0".parse().expect("ip")));
        assert!(!valid_port_ip(&n, "10.0.0.255".parse().expect("ip")));
        assert!(!valid_port_ip(&n, "10.0.1.5".parse().expect("ip")));
        assert!(validate_gateway(&n, "10.0.0.255".parse().expect("ip")).is_err());
        assert!(validate_gateway(&n, "10.0.1.1".parse().expect("ip")).is_err());
        assert!(validate_gateway(&n, "10.0.0.254".parse().expect("ip")).is_ok());
    }

    #[test]
    fn keys_sort_numerically() {
        let a = key(to_u128("10.0.0.9".parse().expect("ip")));
        let b = key(to_u128("10.0.0.10".parse().expect("ip")));
        assert!(a < b);
        assert_eq!(parse_key(&b), Some(to_u128("10.0.0.10".parse().expect("ip"))));
    }

    #[test]
    fn macs_and_eui64() {
        let m = parse_mac("FA:16:3E:00:11:22").expect("mac");
        assert_eq!(format_mac(&m), "fa:16:3e:00:11:22");
        assert!(parse_mac("01:00:5e:00:00:01").is_none());
        assert!(parse_mac("fa:16:3e:00:11").is_none());
        assert_eq!(eui64(&net("2001:db8::/64"), &m).to_string(), "2001:db8::f816:3eff:fe00:1122");
    }
}
