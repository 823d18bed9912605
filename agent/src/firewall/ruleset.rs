//! The nftables ruleset for a [`HostFilters`], as text for `nft -f` (pure: no I/O).
//!
//! Two tables of Meridian's own, replaced together in one transaction (see
//! [`ruleset`]): nothing else on the host is added to, flushed or deleted.
//!
//! - `table inet meridian` only translates conntrack's verdict into two bits of the packet
//!   mark ([`MARK_ESTABLISHED`], [`MARK_INVALID`]), for packets entering or leaving a Meridian
//!   bridge (`mrd-*`) and nothing else. This kernel has no `nf_conntrack_bridge`, so a `bridge`
//!   table cannot use `ct`; the Meridian bridges' own `nf_call_iptables` flag makes bridged IP
//!   traffic pass the inet hooks (and conntrack) on its way.
//! - `table bridge meridian` does the per-port work, matched on the guests' tap devices through
//!   verdict maps (`iifname`/`oifname` → the port's chain): anti-spoofing in `prerouting` before
//!   conntrack sees the packet, the port's egress rules in `prerouting` after it, its ingress
//!   rules in `postrouting` (bridged and host-sent packets alike). A tap that is in no map (a
//!   port without port security, anything not Meridian's) is not touched.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use meridian_common::agent::{Direction, EtherType, FilterRule, HostFilters, PortFilter};

/// The name of both tables, unless configured otherwise (`--firewall-table`: several agents
/// sharing one machine, as in the tests, each keep their own).
pub const TABLE: &str = "meridian";

/// Mark bit set on packets of connections conntrack has seen both ways (established or related).
pub const MARK_ESTABLISHED: u32 = 0x0100_0000;
/// Mark bit set on packets conntrack finds invalid.
pub const MARK_INVALID: u32 = 0x0200_0000;
/// Meridian's bits of the packet mark; every other bit is left as it was.
pub const MARK_MASK: u32 = MARK_ESTABLISHED | MARK_INVALID;

/// The metadata service's address (always reachable from and to a filtered port).
pub const METADATA_V4: &str = "169.254.169.254";

/// Prefix of every Meridian bridge (see `xml::bridge_name`).
pub const BRIDGE_PREFIX: &str = "mrd-";

/// A guest NIC's tap device: `tap` and the first 11 characters of the port id (as Nova names
/// them), 14 characters, within Linux's 15.
pub fn tap_name(port_id: &str) -> String {
    let short: String = port_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(11).collect();
    format!("tap{short}")
}

/// Why a port's filter cannot be generated. A port with a bad MAC or address gets a
/// drop-everything chain on its tap instead (never passed unfiltered).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidPort {
    #[error("port {port}: bad MAC address {mac:?}")]
    Mac { port: String, mac: String },
    #[error("port {port}: bad address {address:?}")]
    Address { port: String, address: String },
    #[error("port {port}: its tap name is another port's; that port's filter applies")]
    Duplicate { port: String },
}

/// A MAC in nft's notation (lower case, six colon-separated octets), or `None`.
fn mac(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.split(':').collect();
    let ok = parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| value.to_ascii_lowercase())
}

/// An address or prefix (`10.0.0.5`, `10.0.0.0/24`), normalised by `ipnet`.
fn net(value: &str) -> Option<IpNet> {
    value.parse::<IpNet>().ok().map(|n| n.trunc()).or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
}

fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.trunc().to_string() }
}

/// A port's identity, checked: who it may claim to be.
struct Identity {
    tap: String,
    /// The MACs the port may send from, each with the addresses and prefixes it may send as
    /// (fixed IPs with the port's MAC, pairs with theirs), aggregated so no two overlap (nft
    /// refuses overlapping intervals in one set).
    sources: BTreeMap<String, Vec<IpNet>>,
}

fn identity(port: &PortFilter) -> Result<Identity, InvalidPort> {
    let bad_mac = |m: &str| InvalidPort::Mac { port: port.port_id.clone(), mac: m.to_string() };
    let bad_ip = |a: &str| InvalidPort::Address { port: port.port_id.clone(), address: a.to_string() };
    let own = mac(&port.mac_address).ok_or_else(|| bad_mac(&port.mac_address))?;
    let mut sources: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    let own_ips = port.fixed_ips.iter().map(|ip| net(ip).ok_or_else(|| bad_ip(ip))).collect::<Result<Vec<_>, _>>()?;
    sources.entry(own.clone()).or_default().extend(own_ips);
    for p in &port.allowed_address_pairs {
        let m = if p.mac_address.is_empty() {
            own.clone()
        } else {
            mac(&p.mac_address).ok_or_else(|| bad_mac(&p.mac_address))?
        };
        let n = net(&p.ip_address).ok_or_else(|| bad_ip(&p.ip_address))?;
        sources.entry(m).or_default().push(n);
    }
    for nets in sources.values_mut() {
        // IPv6 link-local addresses are the port's whatever its fixed IPs.
        nets.push(IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 64)));
        *nets = IpNet::aggregate(nets);
    }
    Ok(Identity { tap: tap_name(&port.port_id), sources })
}

/// `{ a, b }` for nft (callers never pass an empty list: nft has no empty anonymous set).
fn set<I: IntoIterator<Item = String>>(items: I) -> String {
    let items: Vec<String> = items.into_iter().collect();
    format!("{{ {} }}", items.join(", "))
}

/// What counts of a generated ruleset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Ports filtered (port security on).
    pub filtered: usize,
    /// Ports passed unfiltered (port security off).
    pub unfiltered: usize,
    /// Ports whose filter could not be generated: their taps drop everything.
    pub invalid: Vec<InvalidPort>,
    /// nft rules written for security group rules (after merging rules that differ only in
    /// their remote prefixes).
    pub rule_lines: usize,
}

/// The whole `nft -f` input for `filters`: both tables declared (so the deletes cannot fail),
/// deleted, and written again, in one transaction: the kernel switches from the old ruleset to
/// the new one at once, with no moment where a port is unfiltered.
pub fn ruleset(filters: &HostFilters, table: &str) -> (String, Summary) {
    let mut summary = Summary::default();
    let mut chains = String::new();
    let mut spoof = Vec::new();
    let mut egress = Vec::new();
    let mut ingress = Vec::new();
    let mut ports: Vec<&PortFilter> = filters.ports.iter().collect();
    ports.sort_by(|a, b| a.port_id.cmp(&b.port_id));
    // One tap, one entry in each map (nft refuses a key twice, which would fail the whole
    // apply): a repeated port, or two ports whose ids share 11 characters, keep the first.
    let mut taps = std::collections::HashSet::new();
    ports.retain(|p| {
        let fresh = taps.insert(tap_name(&p.port_id));
        if !fresh {
            summary.invalid.push(InvalidPort::Duplicate { port: p.port_id.clone() });
        }
        fresh
    });
    for port in ports {
        if !port.port_security_enabled {
            summary.unfiltered += 1;
            continue;
        }
        let id = match identity(port) {
            Ok(id) => id,
            Err(e) => {
                let tap = tap_name(&port.port_id);
                let _ = writeln!(chains, "  chain quarantine_{tap} {{\n    drop\n  }}");
                for list in [&mut spoof, &mut egress, &mut ingress] {
                    list.push(format!("\"{tap}\" : jump quarantine_{tap}"));
                }
                summary.invalid.push(e);
                continue;
            }
        };
        summary.filtered += 1;
        let stateful = port.rules.is_empty() || port.rules.iter().any(|r| r.stateful);
        spoof_chain(&mut chains, &id);
        summary.rule_lines += port_chain(&mut chains, &id.tap, Direction::Egress, stateful, &port.rules);
        summary.rule_lines += port_chain(&mut chains, &id.tap, Direction::Ingress, stateful, &port.rules);
        spoof.push(format!("\"{0}\" : jump spoof_{0}", id.tap));
        egress.push(format!("\"{0}\" : jump egress_{0}", id.tap));
        ingress.push(format!("\"{0}\" : jump ingress_{0}", id.tap));
    }

    let mut out = String::new();
    let _ = writeln!(out, "# Meridian port filters, generation {}", filters.generation);
    for family in ["bridge", "inet"] {
        let _ = writeln!(out, "table {family} {table}\ndelete table {family} {table}");
    }
    let _ = writeln!(out, "table inet {table} {{");
    // After conntrack (-200), before anything that acts on the mark. Only packets on Meridian
    // bridges; only Meridian's bits.
    for (chain, hook, dev) in [("conntrack_in", "prerouting", "iifname"), ("conntrack_out", "output", "oifname")] {
        let _ = writeln!(out, "  chain {chain} {{\n    type filter hook {hook} priority -150; policy accept;");
        let _ = writeln!(out, "    {dev} != \"{BRIDGE_PREFIX}*\" return");
        let _ = writeln!(out, "    meta mark set meta mark & {:#010x}", !MARK_MASK);
        let _ = writeln!(out, "    ct state established,related meta mark set meta mark | {MARK_ESTABLISHED:#010x}");
        let _ = writeln!(out, "    ct state invalid meta mark set meta mark | {MARK_INVALID:#010x}");
        out.push_str("  }\n");
    }
    out.push_str("}\n");

    let _ = writeln!(out, "table bridge {table} {{");
    for (name, elements) in [("spoof", &spoof), ("egress", &egress), ("ingress", &ingress)] {
        let _ = writeln!(out, "  map {name}_ports {{\n    type ifname : verdict");
        if !elements.is_empty() {
            let _ = writeln!(out, "    elements = {}", set(elements.iter().cloned()));
        }
        out.push_str("  }\n");
    }
    out.push_str(&chains);
    // Anti-spoofing before br_netfilter (priority 0) hands the packet to conntrack, so a spoofed
    // packet never creates a connection; egress after it, when the mark is set.
    for (chain, hook, priority, dev, map) in [
        ("guest_spoof", "prerouting", -200, "iifname", "spoof_ports"),
        ("guest_egress", "prerouting", 200, "iifname", "egress_ports"),
        ("guest_ingress", "postrouting", -200, "oifname", "ingress_ports"),
    ] {
        let _ = writeln!(
            out,
            "  chain {chain} {{\n    type filter hook {hook} priority {priority}; policy accept;\n    {dev} vmap @{map}\n  }}"
        );
    }
    out.push_str("}\n");
    (out, summary)
}

/// The anti-spoofing chain of a port (packets from its tap): source MAC, source IPv4/IPv6 and
/// ARP sender among the port's own; DHCP discovery and IPv6 link-local and DAD let through;
/// every other frame dropped. `accept` ends only this hook's evaluation: egress comes next.
fn spoof_chain(out: &mut String, id: &Identity) {
    let _ = writeln!(out, "  chain spoof_{} {{", id.tap);
    let macs = || id.sources.keys().cloned();
    let _ = writeln!(out, "    ether saddr != {} drop", set(macs()));
    let pairs = |v6: bool| -> Vec<String> {
        id.sources
            .iter()
            .flat_map(|(m, nets)| {
                nets.iter()
                    .filter(move |n| matches!(n, IpNet::V6(_)) == v6)
                    .map(move |n| format!("{m} . {}", net_text(n)))
            })
            .collect()
    };
    let (v4, v6) = (pairs(false), pairs(true));
    // ARP: the sender must be the port (a probe's sender address is 0.0.0.0).
    if !v4.is_empty() {
        let _ = writeln!(out, "    ether type arp arp saddr ether . arp saddr ip {} accept", set(v4.iter().cloned()));
    }
    let _ = writeln!(out, "    ether type arp arp saddr ether {} arp saddr ip 0.0.0.0 accept", set(macs()));
    // A DHCP client has no address yet.
    out.push_str("    ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept\n");
    if !v4.is_empty() {
        let _ = writeln!(out, "    ether type ip ether saddr . ip saddr {} accept", set(v4));
    }
    // IPv6 link-local addresses are among `v6` (see `identity`); duplicate address detection
    // sends from ::.
    let _ = writeln!(out, "    ether type ip6 ether saddr . ip6 saddr {} accept", set(v6));
    out.push_str("    ether type ip6 ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } accept\n");
    out.push_str("    drop\n  }\n");
}

/// ICMPv6 the guest must send for IPv6 to work at all (router and neighbour solicitation,
/// neighbour advertisement, multicast listener reports).
const ICMPV6_OUT: &str =
    "nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report";
/// ICMPv6 the guest must receive (also router advertisements and redirects).
const ICMPV6_IN: &str = "nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect, mld-listener-query";

/// A port's egress (from its tap) or ingress (to its tap) chain; returns how many rule lines it
/// wrote for the security group rules.
fn port_chain(out: &mut String, tap: &str, direction: Direction, stateful: bool, rules: &[FilterRule]) -> usize {
    let name = match direction {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    };
    let _ = writeln!(out, "  chain {name}_{tap} {{");
    match direction {
        Direction::Egress => {
            // A guest may not act as a DHCP server or an IPv6 router (as Neutron).
            out.push_str("    ether type ip udp sport 67 udp dport 68 drop\n");
            out.push_str("    ether type ip6 udp sport 547 udp dport 546 drop\n");
            out.push_str("    ether type ip6 icmpv6 type nd-router-advert drop\n");
            out.push_str("    ether type arp accept\n");
            out.push_str("    ether type ip udp sport 68 udp dport 67 accept\n");
            out.push_str("    ether type ip6 udp sport 546 udp dport 547 accept\n");
            let _ = writeln!(out, "    ether type ip6 icmpv6 type {{ {ICMPV6_OUT} }} accept");
            let _ = writeln!(out, "    ether type ip ip daddr {METADATA_V4} accept");
        }
        Direction::Ingress => {
            out.push_str("    ether type arp accept\n");
            out.push_str("    ether type ip udp sport 67 udp dport 68 accept\n");
            out.push_str("    ether type ip6 udp sport 547 udp dport 546 accept\n");
            let _ = writeln!(out, "    ether type ip6 icmpv6 type {{ {ICMPV6_IN} }} accept");
            let _ = writeln!(out, "    ether type ip ip saddr {METADATA_V4} accept");
        }
    }
    if stateful {
        let _ = writeln!(out, "    meta mark & {MARK_INVALID:#010x} != 0 drop");
        let _ = writeln!(out, "    meta mark & {MARK_ESTABLISHED:#010x} != 0 accept");
    }
    let lines = rule_lines(direction, rules);
    for l in &lines {
        let _ = writeln!(out, "    {l} accept");
    }
    out.push_str("    drop\n  }\n");
    lines.len()
}

/// The match of one group of rules that differ only in their remote prefixes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    ethertype: u8,
    protocol: Option<u8>,
    min: Option<u16>,
    max: Option<u16>,
}

/// The rules of one direction as nft matches (without the verdict), rules with the same
/// protocol and ports merged into one with the union of their remotes (one lookup in one set
/// instead of one rule each: a port with a thousand remote prefixes is one rule).
pub fn rule_lines(direction: Direction, rules: &[FilterRule]) -> Vec<String> {
    // None: anyone; Some(set): these prefixes.
    let mut groups: BTreeMap<Key, Option<Vec<IpNet>>> = BTreeMap::new();
    for r in rules.iter().filter(|r| r.direction == direction) {
        let v6 = r.ethertype == EtherType::IPv6;
        // Neutron's "icmp" in an IPv6 rule means ICMPv6.
        let protocol = match r.protocol {
            Some(1) if v6 => Some(58),
            p => p,
        };
        let key = Key { ethertype: if v6 { 6 } else { 4 }, protocol, min: r.port_range_min, max: r.port_range_max };
        let remote = r.remote.as_ref().map(|list| {
            list.iter().filter_map(|s| net(s)).filter(|n| matches!(n, IpNet::V6(_)) == v6).collect::<Vec<_>>()
        });
        match groups.entry(key) {
            Entry::Vacant(v) => {
                v.insert(remote);
            }
            Entry::Occupied(mut o) => match (o.get_mut(), remote) {
                (slot @ Some(_), None) => *slot = None,
                (Some(existing), Some(more)) => existing.extend(more),
                (None, _) => {}
            },
        }
    }
    let mut lines = Vec::new();
    for (key, remote) in groups {
        let family = if key.ethertype == 6 { "ip6" } else { "ip" };
        let mut l = format!("ether type {family}");
        if let Some(mut nets) = remote {
            if nets.is_empty() {
                // A remote group without members: matches nobody.
                continue;
            }
            nets = IpNet::aggregate(&nets);
            let dir = if direction == Direction::Ingress { "saddr" } else { "daddr" };
            let _ = write!(l, " {family} {dir} {}", set(nets.iter().map(net_text)));
        }
        match key.protocol {
            None => {}
            Some(p @ (1 | 58)) => {
                let icmp = if p == 58 { "icmpv6" } else { "icmp" };
                // Without ethertype agreement (ICMPv4 in an IPv6 rule and so on) the protocol
                // number alone is matched.
                if (p == 58) == (key.ethertype == 6) {
                    // A type or code beyond a byte matches nothing (never "any").
                    if key.min.is_some_and(|t| t > 255) || key.max.is_some_and(|c| c > 255) {
                        continue;
                    }
                    let _ = write!(l, " meta l4proto {p}");
                    if let Some(t) = key.min {
                        let _ = write!(l, " {icmp} type {t}");
                        if let Some(c) = key.max {
                            let _ = write!(l, " {icmp} code {c}");
                        }
                    }
                } else {
                    let _ = write!(l, " meta l4proto {p}");
                }
            }
            Some(p) => {
                let _ = write!(l, " meta l4proto {p}");
                // Ports only mean something for protocols with them (TCP, UDP, DCCP, SCTP,
                // UDP-Lite), as Neutron.
                if matches!(p, 6 | 17 | 33 | 132 | 136) {
                    match (key.min, key.max) {
                        (Some(a), Some(b)) if a < b => {
                            let _ = write!(l, " th dport {a}-{b}");
                        }
                        (Some(a), _) => {
                            let _ = write!(l, " th dport {a}");
                        }
                        (None, _) => {}
                    }
                }
            }
        }
        lines.push(l);
    }
    lines
}

#[cfg(test)]
mod tests {
    use meridian_common::agent::AddressPair;

    use super::*;

    const PORT: &str = "0e7c1c1e-1111-4222-8333-444455556666";

    fn rule(direction: Direction, ethertype: EtherType, protocol: Option<u8>) -> FilterRule {
        FilterRule {
            direction,
            ethertype,
            protocol,
            port_range_min: None,
            port_range_max: None,
            remote: None,
            stateful: true,
        }
    }

    fn port(rules: Vec<FilterRule>) -> PortFilter {
        PortFilter {
            port_id: PORT.into(),
            instance_id: "i1".into(),
            network_id: "5b9b2c4e-aaaa-bbbb-cccc-ddddeeeeffff".into(),
            mac_address: "FA:16:3E:00:00:01".into(),
            fixed_ips: vec!["10.0.0.5".into(), "fd00::5".into()],
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            rules,
        }
    }

    fn text(ports: Vec<PortFilter>) -> String {
        ruleset(&HostFilters { generation: 7, ports }, TABLE).0
    }

    /// The lines of one chain's body.
    fn chain<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let head = format!("  chain {name} {{");
        let mut lines = text.lines().skip_while(|l| *l != head);
        assert!(lines.next().is_some(), "no chain {name} in\n{text}");
        lines.take_while(|l| *l != "  }").map(str::trim).collect()
    }

    #[test]
    fn tap_names_follow_nova() {
        assert_eq!(tap_name(PORT), "tap0e7c1c1e-11");
        assert!(tap_name(PORT).len() <= 15);
    }

    #[test]
    fn replaces_only_its_own_tables_in_one_transaction() {
        let t = text(vec![port(vec![])]);
        let lines: Vec<&str> = t.lines().collect();
        // Declared before deleted, so a first apply (no table yet) does not fail.
        assert_eq!(
            &lines[1..5],
            [
                "table bridge meridian",
                "delete table bridge meridian",
                "table inet meridian",
                "delete table inet meridian"
            ]
        );
        let tables: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("table ") && l.ends_with('{')).collect();
        assert_eq!(tables, ["table inet meridian {", "table bridge meridian {"]);
        assert!(!t.contains("flush ruleset") && !t.contains("LIBVIRT"));
        // The inet table only looks at Meridian bridges, and only sets Meridian's mark bits.
        let ct = chain(&t, "conntrack_in");
        assert_eq!(ct[1], "iifname != \"mrd-*\" return");
        assert_eq!(ct[2], "meta mark set meta mark & 0xfcffffff");
        assert_eq!(chain(&t, "conntrack_out")[1], "oifname != \"mrd-*\" return");
    }

    #[test]
    fn anti_spoofing_allows_the_ports_own_addresses_only() {
        let mut p = port(vec![]);
        p.allowed_address_pairs = vec![
            AddressPair { ip_address: "10.1.0.0/24".into(), mac_address: "fa:16:3e:00:00:99".into() },
            AddressPair { ip_address: "10.0.0.0/28".into(), mac_address: String::new() },
        ];
        let t = text(vec![p]);
        let c = chain(&t, "spoof_tap0e7c1c1e-11");
        assert_eq!(c[0], "ether saddr != { fa:16:3e:00:00:01, fa:16:3e:00:00:99 } drop");
        // 10.0.0.5 is inside the pair 10.0.0.0/28 of the same MAC: aggregated, no overlap.
        assert_eq!(
            c[1],
            "ether type arp arp saddr ether . arp saddr ip { fa:16:3e:00:00:01 . 10.0.0.0/28, fa:16:3e:00:00:99 . 10.1.0.0/24 } accept"
        );
        assert!(
            c.contains(&"ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept")
        );
        assert!(c.contains(
            &"ether type ip ether saddr . ip saddr { fa:16:3e:00:00:01 . 10.0.0.0/28, fa:16:3e:00:00:99 . 10.1.0.0/24 } accept"
        ));
        assert!(c.contains(
            &"ether type ip6 ether saddr . ip6 saddr { fa:16:3e:00:00:01 . fd00::5, fa:16:3e:00:00:01 . fe80::/64, fa:16:3e:00:00:99 . fe80::/64 } accept"
        ));
        assert_eq!(c.last(), Some(&"drop"));
        assert!(t.contains("map spoof_ports {\n    type ifname : verdict\n    elements = { \"tap0e7c1c1e-11\" : jump spoof_tap0e7c1c1e-11 }"));
    }

    #[test]
    fn no_rules_means_only_dhcp_metadata_and_return_traffic() {
        let t = text(vec![port(vec![])]);
        let e = chain(&t, "egress_tap0e7c1c1e-11");
        assert!(e.contains(&"ether type ip udp sport 67 udp dport 68 drop"));
        assert!(e.contains(&"ether type ip ip daddr 169.254.169.254 accept"));
        assert!(e.contains(&"meta mark & 0x01000000 != 0 accept"));
        assert!(e.contains(&"meta mark & 0x02000000 != 0 drop"));
        assert_eq!(e.last(), Some(&"drop"));
        let i = chain(&t, "ingress_tap0e7c1c1e-11");
        assert!(i.contains(&"ether type ip udp sport 67 udp dport 68 accept"));
        assert!(i.contains(&"ether type ip ip saddr 169.254.169.254 accept"));
        let invalid = i.iter().position(|l| l.contains("0x02000000")).expect("invalid drop");
        let established = i.iter().position(|l| l.contains("0x01000000")).expect("established accept");
        assert!(invalid < established);
        assert_eq!(i.last(), Some(&"drop"));
    }

    #[test]
    fn every_rule_kind() {
        let mut tcp = rule(Direction::Ingress, EtherType::IPv4, Some(6));
        (tcp.port_range_min, tcp.port_range_max) = (Some(8080), Some(8080));
        let mut udp_range = rule(Direction::Ingress, EtherType::IPv4, Some(17));
        (udp_range.port_range_min, udp_range.port_range_max) = (Some(1000), Some(2000));
        let mut ping = rule(Direction::Ingress, EtherType::IPv4, Some(1));
        (ping.port_range_min, ping.port_range_max) = (Some(8), Some(0));
        let mut ping6 = rule(Direction::Ingress, EtherType::IPv6, Some(1));
        ping6.port_range_min = Some(128);
        let mut remote = rule(Direction::Egress, EtherType::IPv4, Some(6));
        remote.remote = Some(vec!["192.0.2.0/24".into(), "198.51.100.7".into(), "2001:db8::1".into()]);
        let mut nobody = rule(Direction::Ingress, EtherType::IPv4, Some(17));
        nobody.remote = Some(vec![]);
        let any6 = rule(Direction::Egress, EtherType::IPv6, None);
        let gre = rule(Direction::Ingress, EtherType::IPv4, Some(47));
        let t = text(vec![port(vec![tcp, udp_range, ping, ping6, remote, nobody, any6, gre])]);
        let i = chain(&t, "ingress_tap0e7c1c1e-11");
        for want in [
            "ether type ip meta l4proto 6 th dport 8080 accept",
            "ether type ip meta l4proto 17 th dport 1000-2000 accept",
            "ether type ip meta l4proto 1 icmp type 8 icmp code 0 accept",
            "ether type ip6 meta l4proto 58 icmpv6 type 128 accept",
            "ether type ip meta l4proto 47 accept",
        ] {
            assert!(i.contains(&want), "{want} not in {i:#?}");
        }
        // An ICMP type beyond a byte matches nobody, rather than every ICMP type.
        let mut bad_icmp = rule(Direction::Ingress, EtherType::IPv4, Some(1));
        bad_icmp.port_range_min = Some(300);
        assert!(rule_lines(Direction::Ingress, &[bad_icmp]).is_empty());
        // A remote group without members matches nobody: no rule at all.
        assert!(!i.iter().any(|l| l.contains("l4proto 17 accept")));
        let e = chain(&t, "egress_tap0e7c1c1e-11");
        // Only the rule's own family of the remotes, as destinations.
        assert!(e.contains(&"ether type ip ip daddr { 192.0.2.0/24, 198.51.100.7 } meta l4proto 6 accept"));
        assert!(e.contains(&"ether type ip6 accept"));
        // Ingress rules are not egress rules.
        assert!(!e.iter().any(|l| l.contains("8080")));
    }

    #[test]
    fn rules_differing_only_in_remotes_are_one_set_lookup() {
        let rules: Vec<FilterRule> = (0..1000u32)
            .map(|n| {
                let mut r = rule(Direction::Ingress, EtherType::IPv4, Some(6));
                (r.port_range_min, r.port_range_max) = (Some(22), Some(22));
                r.remote = Some(vec![format!("10.{}.{}.0/24", n / 256, n % 256)]);
                r
            })
            .collect();
        let (t, summary) = ruleset(&HostFilters { generation: 1, ports: vec![port(rules)] }, TABLE);
        assert_eq!(summary.rule_lines, 1);
        let i = chain(&t, "ingress_tap0e7c1c1e-11");
        let line = i.iter().find(|l| l.contains("th dport 22")).expect("the merged rule");
        // 1000 consecutive /24s aggregate to fewer, larger prefixes covering the same addresses.
        assert!(line.contains("10.0.0.0/15") && line.contains("10.3.0.0/"), "{line}");
        // A rule without remote swallows the others of its kind.
        let mut any = rule(Direction::Ingress, EtherType::IPv4, Some(6));
        (any.port_range_min, any.port_range_max) = (Some(22), Some(22));
        let mut narrow = any.clone();
        narrow.remote = Some(vec!["10.0.0.1".into()]);
        let t = text(vec![port(vec![narrow, any])]);
        assert!(chain(&t, "ingress_tap0e7c1c1e-11").contains(&"ether type ip meta l4proto 6 th dport 22 accept"));
    }

    #[test]
    fn stateless_ports_do_not_use_conntrack() {
        let mut r = rule(Direction::Ingress, EtherType::IPv4, Some(6));
        r.stateful = false;
        let t = text(vec![port(vec![r])]);
        for c in ["ingress_tap0e7c1c1e-11", "egress_tap0e7c1c1e-11"] {
            assert!(!chain(&t, c).iter().any(|l| l.contains("meta mark")), "{c}");
        }
    }

    #[test]
    fn port_security_off_is_not_filtered_at_all() {
        let mut p = port(vec![]);
        p.port_security_enabled = false;
        let (t, summary) = ruleset(&HostFilters { generation: 1, ports: vec![p] }, TABLE);
        assert_eq!((summary.filtered, summary.unfiltered), (0, 1));
        assert!(!t.contains("tap0e7c1c1e-11"));
        assert!(!t.contains("elements"));
    }

    #[test]
    fn one_tap_is_one_map_entry() {
        let mut twin = port(vec![]);
        twin.port_id = format!("{}-twin", &PORT[..11]);
        let (t, summary) =
            ruleset(&HostFilters { generation: 1, ports: vec![port(vec![]), port(vec![]), twin] }, TABLE);
        assert_eq!(summary.filtered, 1);
        assert_eq!(summary.invalid.len(), 2);
        assert_eq!(t.matches("\"tap0e7c1c1e-11\" : jump spoof_").count(), 1);
    }

    #[test]
    fn a_bad_port_drops_everything_rather_than_passing() {
        let mut p = port(vec![]);
        p.mac_address = "fa:16:3e:00:00".into();
        let (t, summary) = ruleset(&HostFilters { generation: 1, ports: vec![p] }, TABLE);
        assert_eq!(summary.invalid.len(), 1);
        assert_eq!(chain(&t, "quarantine_tap0e7c1c1e-11"), ["drop"]);
        for m in ["spoof", "egress", "ingress"] {
            let map = t.split(&format!("map {m}_ports {{")).nth(1).and_then(|r| r.split("  }").next()).expect("map");
            assert!(map.contains("\"tap0e7c1c1e-11\" : jump quarantine_tap0e7c1c1e-11"), "{m}: {map}");
        }
    }
}
