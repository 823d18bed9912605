//! Benchmark of the agent's port filters (figures, not a test), with the real `nft` in network
//! namespaces this process creates and deletes (the machine's ruleset is never touched):
//!
//! - programming one port with 1,000 rules: generating the ruleset, and generating + applying it
//!   (`nft -f`, one transaction), for rules that cannot be merged (1,000 ports × 1,000 remote
//!   addresses) and rules that can (one port, 1,000 remote prefixes: one set lookup);
//! - a new `HostFilters` → enforced: from the call that applies a generation opening a TCP port
//!   to the first connection from the "host" that gets through, and back (closed: in force when
//!   the transaction commits, so the apply's time, checked by a refused connection after).
//!
//! Run (debug build; say so with the figures): `cargo build -p meridian-e2e --bin bench-firewall
//! && target/debug/bench-firewall` (`BENCH_ROUNDS`, default 10).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_agent::firewall::ruleset::ruleset;
use meridian_agent::firewall::{Firewall, Netns, tap_name};
use meridian_agent::xml::bridge_name;
use meridian_common::agent::{Direction, EtherType, FilterRule, HostFilters, PortFilter};

const NETWORK: &str = "be4c0000-0000-4000-8000-00000000be4c";

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn rule(port: u16, remote: String) -> FilterRule {
    FilterRule {
        direction: Direction::Ingress,
        ethertype: EtherType::IPv4,
        protocol: Some(6),
        port_range_min: Some(port),
        port_range_max: Some(port),
        remote: Some(vec![remote]),
        stateful: true,
    }
}

fn port(rules: Vec<FilterRule>) -> PortFilter {
    PortFilter {
        port_id: "be4c0001-0000-4000-8000-000000000001".into(),
        instance_id: "bench".into(),
        network_id: NETWORK.into(),
        mac_address: "fa:16:3e:be:4c:01".into(),
        fixed_ips: vec!["10.78.0.11".into()],
        allowed_address_pairs: vec![],
        port_security_enabled: true,
        rules,
    }
}

fn stats(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    println!(
        "{name:<58} min {:>8.2} ms  p50 {:>8.2} ms  max {:>8.2} ms  (n={})",
        ms(d[0]),
        ms(d[d.len() / 2]),
        ms(d[d.len() - 1]),
        d.len()
    );
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the netns");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let host = format!("mfwbench{}h", std::process::id());
    let guest = format!("mfwbench{}g", std::process::id());
    let namespaces = Namespaces(vec![host.clone(), guest.clone()]);
    for ns in &namespaces.0 {
        sh(&["ip", "netns", "add", ns]);
    }
    let br = bridge_name(NETWORK);
    let base = port(vec![]);
    let tap = tap_name(&base.port_id);
    sh(&["ip", "netns", "exec", &host, "ip", "link", "add", &br, "type", "bridge"]);
    sh(&["ip", "netns", "exec", &host, "ip", "addr", "add", "10.78.0.1/24", "dev", &br]);
    sh(&["ip", "netns", "exec", &host, "ip", "link", "set", &br, "up"]);
    sh(&["ip", "link", "add", &tap, "netns", &host, "type", "veth", "peer", "name", "eth0", "netns", &guest]);
    sh(&["ip", "netns", "exec", &host, "ip", "link", "set", &tap, "master", &br, "up"]);
    sh(&["ip", "netns", "exec", &guest, "ip", "link", "set", "eth0", "address", &base.mac_address]);
    sh(&["ip", "netns", "exec", &guest, "ip", "addr", "add", "10.78.0.11/24", "dev", "eth0"]);
    sh(&["ip", "netns", "exec", &guest, "ip", "link", "set", "eth0", "up"]);
    let fw = Firewall::new(Netns(Some(host.clone())), "meridian");

    // 1,000 rules on one port.
    let distinct: Vec<FilterRule> =
        (0..1000u16).map(|n| rule(10_000 + n, format!("172.16.{}.{}", n / 250, n % 250 + 1))).collect();
    let merged: Vec<FilterRule> =
        (0..1000u16).map(|n| rule(22, format!("172.{}.{}.0/24", 16 + n / 250, n % 250))).collect();
    for (what, rules) in [("1,000 distinct rules", &distinct), ("1,000 rules, one port, 1,000 remotes", &merged)] {
        let filters = HostFilters { generation: 1, ports: vec![port(rules.clone())] };
        let mut generate = Vec::new();
        let mut apply = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let (text, _) = ruleset(&filters, "meridian");
            generate.push(t.elapsed());
            std::hint::black_box(text);
            let t = Instant::now();
            fw.apply(&filters).expect("apply");
            apply.push(t.elapsed());
        }
        stats(&format!("{what}: generate"), generate);
        stats(&format!("{what}: generate + nft apply"), apply);
    }

    // HostFilters → enforced, seen from the host namespace connecting to the guest.
    let listener = in_netns(&guest, || TcpListener::bind(("0.0.0.0", 8080)).expect("bind"));
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut c, b"hi\n");
        }
    });
    let addr: SocketAddr = "10.78.0.11:8080".parse().expect("address");
    let reaches = || {
        in_netns(&host, || {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut b = [0u8; 3];
            s.read_exact(&mut b).is_ok()
        })
    };
    let closed = HostFilters { generation: 10, ports: vec![port(distinct.clone())] };
    let mut with_rule = distinct.clone();
    with_rule.push(rule(8080, "10.78.0.1".into()));
    let open = HostFilters { generation: 11, ports: vec![port(with_rule)] };
    let (mut opening, mut closing) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        fw.apply(&closed).expect("apply");
        assert!(!reaches(), "closed");
        let t = Instant::now();
        fw.apply(&open).expect("apply");
        while !reaches() {
            assert!(t.elapsed() < Duration::from_secs(5), "never opened");
        }
        opening.push(t.elapsed());
        // Closing is in force when the transaction commits: the apply's own time, checked after.
        let t = Instant::now();
        fw.apply(&closed).expect("apply");
        closing.push(t.elapsed());
        assert!(!reaches(), "closed once applied");
    }
    stats("HostFilters (1,001 rules) → port open, first connection", opening);
    stats("HostFilters (1,000 rules) → port closed (applied)", closing);
    drop(namespaces);
}
