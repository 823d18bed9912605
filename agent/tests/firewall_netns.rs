//! The generated ruleset against real packets: real `nft`, a "host" network namespace with a
//! Meridian bridge, and one namespace per "guest" plugged into it through a veth whose host end
//! has the port's tap name. Everything the test makes lives in namespaces it creates and deletes
//! (a Drop guard), so the machine's own ruleset and traffic are never touched.
//!
//! Needs root, `ip` and `nft` (scripts/deps.sh installs nftables).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_agent::firewall::{Firewall, Netns, tap_name};
use meridian_agent::xml::bridge_name;
use meridian_common::agent::{Direction, EtherType, FilterRule, HostFilters, PortFilter};

const NETWORK: &str = "7a1d0c44-5e6f-4a0b-9c8d-0e1f2a3b4c5d";
const HOST_IP: &str = "10.77.0.1";

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(args: &[&str]) -> String {
    run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets made there stay in it.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the netns");
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                .expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// A host namespace with the network's bridge, and guest namespaces on it. Deleting the host
/// namespace takes the bridge, the taps and (with them) the veths away; the guests' go after.
struct Lab {
    tag: String,
    host: String,
    guests: Vec<String>,
    fw: Firewall,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.guests.iter().chain([&self.host]) {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

struct Guest {
    ns: String,
    port: PortFilter,
    ip: String,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        assert!(Command::new("nft").arg("--version").output().is_ok(), "nft is missing: run scripts/deps.sh");
        let host = format!("mfw{}{tag}h", std::process::id());
        let lab = Lab {
            tag: tag.to_string(),
            host: host.clone(),
            guests: Vec::new(),
            fw: Firewall::new(Netns(Some(host.clone())), "meridian"),
        };
        let _ = run(&["ip", "netns", "del", &host]);
        must(&["ip", "netns", "add", &host]);
        let br = bridge_name(NETWORK);
        let x = |args: &[&str]| {
            let mut a = vec!["ip", "netns", "exec", &host];
            a.extend_from_slice(args);
            must(&a);
        };
        x(&["ip", "link", "set", "lo", "up"]);
        // Off for every bridge (as on hosts that turn it off), so the Meridian bridge's own flag,
        // which the firewall sets, is what makes conntrack see bridged traffic.
        x(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0"]);
        x(&["ip", "link", "add", &br, "type", "bridge"]);
        x(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", &br]);
        x(&["ip", "link", "set", &br, "up"]);
        lab
    }

    /// A guest namespace on the bridge with `port`'s MAC and first fixed IP.
    fn guest(&mut self, n: usize, port: PortFilter) -> Guest {
        let ns = format!("mfw{}{}{n}", std::process::id(), self.tag);
        let _ = run(&["ip", "netns", "del", &ns]);
        must(&["ip", "netns", "add", &ns]);
        self.guests.push(ns.clone());
        let tap = tap_name(&port.port_id);
        must(&["ip", "link", "add", &tap, "netns", &self.host, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        let h = |args: &[&str]| {
            let mut a = vec!["ip", "netns", "exec", self.host.as_str()];
            a.extend_from_slice(args);
            must(&a);
        };
        h(&["ip", "link", "set", &tap, "master", &bridge_name(NETWORK)]);
        h(&["ip", "link", "set", &tap, "up"]);
        let ip = port.fixed_ips[0].clone();
        let g = |args: &[&str]| {
            let mut a = vec!["ip", "netns", "exec", ns.as_str()];
            a.extend_from_slice(args);
            must(&a);
        };
        g(&["ip", "link", "set", "lo", "up"]);
        g(&["ip", "link", "set", "eth0", "address", &port.mac_address]);
        g(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        g(&["ip", "link", "set", "eth0", "up"]);
        Guest { ns, port, ip }
    }

    fn apply(&self, ports: &[&PortFilter], generation: u64) {
        let filters = HostFilters { generation, ports: ports.iter().map(|p| (*p).clone()).collect() };
        self.fw.apply(&filters).unwrap_or_else(|e| panic!("apply: {}", meridian_agent::controller::chain(&e)));
    }
}

fn port(n: u8, rules: Vec<FilterRule>) -> PortFilter {
    PortFilter {
        port_id: format!("{n:02x}c0ffee-0000-4000-8000-0000000000{n:02x}"),
        instance_id: format!("i{n}"),
        network_id: NETWORK.into(),
        mac_address: format!("fa:16:3e:00:00:{n:02x}"),
        fixed_ips: vec![format!("10.77.0.{}", 10 + n)],
        allowed_address_pairs: vec![],
        port_security_enabled: true,
        rules,
    }
}

/// Neutron's default group for members `members`: ingress from the group, egress anywhere.
fn default_group(members: &[&str]) -> Vec<FilterRule> {
    let any = |direction, remote| FilterRule {
        direction,
        ethertype: EtherType::IPv4,
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote,
        stateful: true,
    };
    vec![any(Direction::Ingress, Some(members.iter().map(|m| m.to_string()).collect())), any(Direction::Egress, None)]
}

fn tcp_from(port: u16, remote: &str) -> FilterRule {
    FilterRule {
        direction: Direction::Ingress,
        ethertype: EtherType::IPv4,
        protocol: Some(6),
        port_range_min: Some(port),
        port_range_max: Some(port),
        remote: Some(vec![remote.to_string()]),
        stateful: true,
    }
}

/// Serves `hi` to every connection on `port` inside `ns`.
fn greeter(ns: &str, port: u16) {
    // `::` takes IPv4 too (bindv6only is 0 in a new namespace).
    let listener = in_netns(ns, || TcpListener::bind(("::", port)).expect("bind"));
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(b"hi\n");
        }
    });
}

/// Echoes lines back on `port` inside `ns` (for a connection that lives across updates).
fn echo(ns: &str, port: u16) {
    let listener = in_netns(ns, || TcpListener::bind(("0.0.0.0", port)).expect("bind"));
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = match c.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                for line in BufReader::new(c).lines().map_while(Result::ok) {
                    let _ = w.write_all(format!("{line}\n").as_bytes());
                }
            });
        }
    });
}

/// Whether a TCP connection from `ns` to `to` gets the greeting within a second.
fn reaches(ns: &str, to: &str, port: u16) -> bool {
    let addr: SocketAddr = match to.parse::<std::net::IpAddr>().expect("address") {
        std::net::IpAddr::V4(a) => (a, port).into(),
        std::net::IpAddr::V6(a) => (a, port).into(),
    };
    in_netns(ns, || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).is_ok() && &buf == b"hi\n"
    })
}

/// Polls until `ns` reaches `to:port`, for up to `within`; whether it did.
fn reaches_within(ns: &str, to: &str, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if reaches(ns, to, port) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn no_meridian_table_in_the_machines_namespace() {
    let tables = must(&["nft", "list", "tables"]);
    assert!(!tables.contains("meridian"), "a meridian table leaked into the machine's namespace:\n{tables}");
}

#[test]
fn security_groups_between_guests_and_the_host() {
    let mut lab = Lab::new("sg");
    // g1 and g2: one project's default group; g3: another project's.
    let (a, b, c) = ("10.77.0.11", "10.77.0.12", "10.77.0.13");
    let g1 = lab.guest(1, port(1, default_group(&[a, b])));
    let g2 = lab.guest(2, port(2, default_group(&[a, b])));
    let g3 = lab.guest(3, port(3, default_group(&[c])));
    for g in [&g1, &g2, &g3] {
        greeter(&g.ns, 8080);
    }
    greeter(&lab.host, 8080);
    // Before any filter everything passes (a control: the denials below are the firewall's).
    assert!(reaches(&lab.host, &g2.ip, 8080));
    assert!(reaches(&g3.ns, &g2.ip, 8080));

    lab.apply(&[&g1.port, &g2.port, &g3.port], 1);
    assert!(reaches(&g1.ns, &g2.ip, 8080), "same group reaches");
    assert!(!reaches(&lab.host, &g2.ip, 8080), "the host is not in the group");
    assert!(!reaches(&g3.ns, &g2.ip, 8080), "another project's guest");
    assert!(!reaches(&g2.ns, &g3.ip, 8080), "into another project's guest");
    // Egress is open, and its replies come back (conntrack through the mark).
    assert!(reaches(&g2.ns, HOST_IP, 8080), "egress to the host");

    // An ingress rule from the host's address opens the port; deleting it closes it again.
    let mut opened = g2.port.clone();
    opened.rules.push(tcp_from(8080, &format!("{HOST_IP}/32")));
    let started = Instant::now();
    lab.apply(&[&g1.port, &opened, &g3.port], 2);
    assert!(reaches_within(&lab.host, &g2.ip, 8080, Duration::from_secs(1)), "rule added");
    eprintln!("rule added → host reaches guest: {:?}", started.elapsed());
    assert!(!reaches(&g3.ns, &g2.ip, 8080), "the rule is the host's only");
    lab.apply(&[&g1.port, &g2.port, &g3.port], 3);
    assert!(!reaches(&lab.host, &g2.ip, 8080), "rule deleted");

    // A port without port security passes everything, both ways.
    let mut open3 = g3.port.clone();
    open3.port_security_enabled = false;
    lab.apply(&[&g1.port, &g2.port, &open3], 4);
    assert!(reaches(&lab.host, &g3.ip, 8080));
    assert!(reaches(&g1.ns, &g3.ip, 8080));
    let tables = must(&["ip", "netns", "exec", &lab.host, "nft", "list", "table", "bridge", "meridian"]);
    assert!(!tables.contains(&tap_name(&g3.port.port_id)));

    no_meridian_table_in_the_machines_namespace();
}

#[test]
fn a_guest_cannot_send_as_another_ip_or_mac() {
    let mut lab = Lab::new("sp");
    let g1 = lab.guest(1, port(1, default_group(&[])));
    greeter(&lab.host, 8080);
    lab.apply(&[&g1.port], 1);
    assert!(reaches(&g1.ns, HOST_IP, 8080), "its own address works");

    // Another IP on the same MAC.
    let g = |args: &[&str]| {
        let mut a = vec!["ip", "netns", "exec", g1.ns.as_str()];
        a.extend_from_slice(args);
        must(&a);
    };
    g(&["ip", "addr", "flush", "dev", "eth0"]);
    g(&["ip", "addr", "add", "10.77.0.99/24", "dev", "eth0"]);
    assert!(!reaches(&g1.ns, HOST_IP, 8080), "spoofed IP");
    // An allowed address pair makes that address its own.
    let mut paired = g1.port.clone();
    paired.allowed_address_pairs =
        vec![meridian_common::agent::AddressPair { ip_address: "10.77.0.96/29".into(), mac_address: String::new() }];
    lab.apply(&[&paired], 2);
    // The guest's failed neighbour lookups of the spoofed attempt are its own business; the
    // deadline is for the rules.
    g(&["ip", "neigh", "flush", "all"]);
    assert!(reaches_within(&g1.ns, HOST_IP, 8080, Duration::from_secs(3)), "allowed address pair");

    // Its own IP again, but another MAC.
    g(&["ip", "addr", "flush", "dev", "eth0"]);
    g(&["ip", "addr", "add", &format!("{}/24", g1.ip), "dev", "eth0"]);
    g(&["ip", "neigh", "flush", "all"]);
    assert!(reaches_within(&g1.ns, HOST_IP, 8080, Duration::from_secs(3)), "back to its own address");
    g(&["ip", "link", "set", "eth0", "down"]);
    g(&["ip", "link", "set", "eth0", "address", "fa:16:3e:00:00:77"]);
    g(&["ip", "link", "set", "eth0", "up"]);
    // The host's neighbour entry still points at the old MAC; forget it so the only question is
    // whether the guest's frames (ARP included) get through.
    let _ = run(&["ip", "netns", "exec", &lab.host, "ip", "neigh", "flush", "all"]);
    assert!(!reaches(&g1.ns, HOST_IP, 8080), "spoofed MAC");
    no_meridian_table_in_the_machines_namespace();
}

#[test]
fn updates_keep_established_flows_and_refuse_new_ones() {
    let mut lab = Lab::new("up");
    let (a, b) = ("10.77.0.11", "10.77.0.12");
    let g1 = lab.guest(1, port(1, default_group(&[a])));
    let mut g2port = port(2, default_group(&[b]));
    g2port.rules.push(tcp_from(9000, &format!("{a}/32")));
    let g2 = lab.guest(2, g2port);
    echo(&g2.ns, 9000);
    lab.apply(&[&g1.port, &g2.port], 1);

    let addr: SocketAddr = format!("{}:9000", g2.ip).parse().expect("address");
    let conn = in_netns(&g1.ns, || TcpStream::connect_timeout(&addr, Duration::from_secs(2))).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut say = |w: &str| -> String {
        (&conn).write_all(format!("{w}\n").as_bytes()).expect("write");
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        line
    };
    assert_eq!(say("one"), "one\n");

    // Another generation that still allows the flow (and adds a rule elsewhere).
    let mut more = g1.port.clone();
    more.rules.push(tcp_from(22, "192.0.2.0/24"));
    lab.apply(&[&more, &g2.port], 2);
    assert_eq!(say("two"), "two\n", "an allowed established flow survives an update");

    // The rule goes: the established flow stays (conntrack), new connections are refused.
    let mut closed = g2.port.clone();
    closed.rules.retain(|r| r.port_range_min != Some(9000));
    lab.apply(&[&more, &closed], 3);
    assert_eq!(say("three"), "three\n", "established flows are not cut");
    let fresh = in_netns(&g1.ns, || TcpStream::connect_timeout(&addr, Duration::from_secs(1)));
    assert!(fresh.is_err(), "a new connection after the rule went");
    no_meridian_table_in_the_machines_namespace();
}

#[test]
fn the_generated_ruleset_loads_for_every_kind_of_rule() {
    // Every rule shape (ICMP type/code, IPv6, remote sets, stateless, pairs) through the real
    // nft, and a thousand rules in one port, in a namespace of its own.
    let lab = Lab::new("ld");
    let mut rules = Vec::new();
    for (ethertype, protocol, min, max) in [
        (EtherType::IPv4, Some(1), Some(8), Some(0)),
        (EtherType::IPv4, Some(1), Some(3), None),
        (EtherType::IPv6, Some(58), Some(128), None),
        (EtherType::IPv6, Some(1), None, None),
        (EtherType::IPv4, Some(17), Some(53), Some(53)),
        (EtherType::IPv6, Some(6), Some(1000), Some(2000)),
        (EtherType::IPv4, Some(132), Some(5000), Some(5001)),
        (EtherType::IPv4, Some(47), None, None),
        (EtherType::IPv6, None, None, None),
    ] {
        for direction in [Direction::Ingress, Direction::Egress] {
            rules.push(FilterRule {
                direction,
                ethertype,
                protocol,
                port_range_min: min,
                port_range_max: max,
                remote: Some(vec![
                    "10.0.0.0/8".into(),
                    "10.1.2.3".into(),
                    "2001:db8::/32".into(),
                    "2001:db8::1".into(),
                ]),
                stateful: true,
            });
        }
    }
    for n in 0..1000u16 {
        rules.push(tcp_from(10_000 + n, &format!("172.16.{}.{}", n / 250, n % 250 + 1)));
    }
    let mut p1 = port(1, rules);
    p1.fixed_ips.push("fd00::11".into());
    p1.allowed_address_pairs = vec![
        meridian_common::agent::AddressPair { ip_address: "10.77.0.0/28".into(), mac_address: String::new() },
        meridian_common::agent::AddressPair { ip_address: "fd00::/64".into(), mac_address: "fa:16:3e:aa:bb:cc".into() },
    ];
    let mut p2 = port(2, vec![tcp_from(22, "10.0.0.1")]);
    p2.rules[0].stateful = false;
    lab.apply(&[&p1, &p2], 1);
    let listed = must(&["ip", "netns", "exec", &lab.host, "nft", "list", "table", "bridge", "meridian"]);
    assert!(listed.lines().any(|l| l.contains("10999") && l.contains("172.16.3.250")), "the thousandth rule is there");
    // Applying again replaces, never duplicates.
    lab.apply(&[&p1, &p2], 2);
    let again = must(&["ip", "netns", "exec", &lab.host, "nft", "list", "table", "bridge", "meridian"]);
    assert_eq!(again.matches("chain spoof_").count(), 2);
    lab.fw.remove().expect("remove");
    let tables = must(&["ip", "netns", "exec", &lab.host, "nft", "list", "tables"]);
    assert!(!tables.contains("meridian"), "{tables}");
    no_meridian_table_in_the_machines_namespace();
}

#[test]
fn ipv6_groups_neighbour_discovery_and_spoofing() {
    let mut lab = Lab::new("v6");
    let (a6, b6) = ("fd00:77::11", "fd00:77::12");
    let v6 = |direction, remote: Option<Vec<String>>| FilterRule {
        direction,
        ethertype: EtherType::IPv6,
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote,
        stateful: true,
    };
    let group = |n: u8| {
        let mut p =
            port(n, vec![v6(Direction::Ingress, Some(vec![a6.into(), b6.into()])), v6(Direction::Egress, None)]);
        p.fixed_ips.push(format!("fd00:77::{}", 10 + n));
        p
    };
    let g1 = lab.guest(1, group(1));
    let g2 = lab.guest(2, group(2));
    let x = |ns: &str, args: &[&str]| {
        let mut a = vec!["ip", "netns", "exec", ns];
        a.extend_from_slice(args);
        must(&a);
    };
    // No DAD: the addresses are usable at once (duplicate detection is not what is tested).
    x(&lab.host, &["ip", "-6", "addr", "add", "fd00:77::1/64", "dev", &bridge_name(NETWORK), "nodad"]);
    x(&g1.ns, &["ip", "-6", "addr", "add", &format!("{a6}/64"), "dev", "eth0", "nodad"]);
    x(&g2.ns, &["ip", "-6", "addr", "add", &format!("{b6}/64"), "dev", "eth0", "nodad"]);
    greeter(&g2.ns, 8080);
    greeter(&lab.host, 8080);
    lab.apply(&[&g1.port, &g2.port], 1);

    // Neighbour discovery gets through (or nothing would), the group reaches, the host not.
    assert!(reaches_within(&g1.ns, b6, 8080, Duration::from_secs(3)), "same group over IPv6");
    assert!(!reaches(&lab.host, b6, 8080), "the host is not in the group");
    assert!(reaches_within(&g2.ns, "fd00:77::1", 8080, Duration::from_secs(3)), "egress and its replies");
    let mut opened = g2.port.clone();
    let mut from_host = v6(Direction::Ingress, Some(vec!["fd00:77::1/128".into()]));
    (from_host.protocol, from_host.port_range_min, from_host.port_range_max) = (Some(6), Some(8080), Some(8080));
    opened.rules.push(from_host);
    lab.apply(&[&g1.port, &opened], 2);
    assert!(reaches_within(&lab.host, b6, 8080, Duration::from_secs(1)), "an IPv6 rule opens it");

    // Another IPv6 source address on the same MAC cannot send.
    x(&g1.ns, &["ip", "-6", "addr", "add", "fd00:77::99/64", "dev", "eth0", "nodad"]);
    x(&g1.ns, &["ip", "-6", "addr", "del", &format!("{a6}/64"), "dev", "eth0"]);
    assert!(!reaches(&g1.ns, b6, 8080), "spoofed IPv6 source");
    no_meridian_table_in_the_machines_namespace();
}
