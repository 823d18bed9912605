//! Security groups on real QEMU guests (`qemu:///system`): three guests of the guest image
//! (busybox httpd on 8080, dropbear on 22) booted through the real server and agent, and their
//! ports filtered by the agent's firewall module fed `HostFilters` built here from the guests'
//! real ports (the server's `port-filters` feed is not wired to this tier yet). Checked from
//! the host (TCP to the guests) and from inside the guests (ssh, then busybox wget).
//!
//! "Projects" are the groups: alpha and beta share one project's default group, gamma has
//! another's. The rules live in a table of this test's own, removed on drop; the agent runs
//! with `--firewall none` so it never competes for it.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_agent::firewall::{Firewall, Netns};
use meridian_common::Client;
use meridian_common::agent::{Direction, EtherType, FilterRule, HostFilters, PortFilter};
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::json;

const BOOT_SECS: u64 = 180;

/// Removes the test's nft tables when dropped (declared before the guests' guard: dropped after).
struct Tables(Firewall);

impl Drop for Tables {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

struct Guest {
    id: String,
    ip: String,
    port: PortFilter,
}

fn rule(direction: Direction, protocol: Option<u8>, port: Option<u16>, remote: Option<Vec<String>>) -> FilterRule {
    FilterRule {
        direction,
        ethertype: EtherType::IPv4,
        protocol,
        port_range_min: port,
        port_range_max: port,
        remote,
        stateful: true,
    }
}

/// A project's default group for `members`, plus ssh from the host (how the test gets in).
fn default_group(members: &[&str], host: &str) -> Vec<FilterRule> {
    vec![
        rule(Direction::Ingress, None, None, Some(members.iter().map(|m| format!("{m}/32")).collect())),
        rule(Direction::Egress, None, None, None),
        rule(Direction::Ingress, Some(6), Some(22), Some(vec![format!("{host}/32")])),
    ]
}

fn ssh(key: &Path, ip: &str, command: &str) -> Output {
    Command::new("ssh")
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-i"])
        .arg(key)
        .arg(format!("root@{ip}"))
        .arg(command)
        .output()
        .expect("run ssh")
}

/// Whether `from` (by ssh) gets `to`'s page on 8080 (busybox 1.35's `wget -T` crashes: `timeout`).
fn guest_reaches(key: &Path, from: &Guest, to: &Guest) -> bool {
    let out = ssh(key, &from.ip, &format!("timeout 3 wget -q -O - http://{}:8080/", to.ip));
    let reached = String::from_utf8_lossy(&out.stdout).contains("meridian-guest");
    if !reached {
        eprintln!("{} → {}: {}", from.ip, to.ip, String::from_utf8_lossy(&out.stderr).trim());
    }
    reached
}

/// Whether `from` gets `to`'s page within 30 s of tries (a TCG guest's first connection after
/// boot can take longer than one wget's timeout).
fn guest_reaches_soon(key: &Path, from: &Guest, to: &Guest) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if guest_reaches(key, from, to) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Whether the host gets `to`'s page on 8080 within a second.
fn host_reaches(to: &Guest) -> bool {
    let addr: SocketAddr = format!("{}:8080", to.ip).parse().expect("address");
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("meridian-guest")
}

/// Requests guests made to the host's listener (their first lines).
fn host_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            let _ = BufReader::new(&c).read_line(&mut line);
            record.lock().expect("lock").push(line);
            let _ = std::io::Write::write_all(&mut &c, b"HTTP/1.0 200 OK\r\n\r\nok\n");
        }
    });
    (port, seen)
}

/// Makes `g` try to reach the host's listener as someone else (`ip` or `mac` changed), then
/// put itself back; waits for its console to say it finished. The ssh session cannot live
/// through the change, so the guest runs it detached.
async fn spoof(admin: &Client, key: &Path, g: &Guest, gw: &str, prefix: &str, port: u16, what: &str) {
    let (ip, mac) = (&g.ip, &g.port.mac_address);
    let (change, undo) = match what {
        "ip" => (
            format!("ip addr flush dev eth0; ip addr add {}/{prefix} dev eth0", spoofed_ip(ip)),
            format!("ip addr flush dev eth0; ip addr add {ip}/{prefix} dev eth0"),
        ),
        _ => (
            "ip link set eth0 down; ip link set eth0 address fa:16:3e:ee:ee:ee; ip link set eth0 up".to_string(),
            format!("ip link set eth0 down; ip link set eth0 address {mac}; ip link set eth0 up"),
        ),
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tag = format!("{what}-{nanos}");
    let script = format!(
        "sleep 1; {change}; ip neigh flush dev eth0; timeout 5 wget -q -O /dev/null http://{gw}:{port}/spoof-{tag}; \
         {undo}; ip neigh flush dev eth0; echo meridian-probe: {tag} done > /dev/ttyS0"
    );
    let out = ssh(key, ip, &format!("setsid sh -c '{script}' </dev/null >/dev/null 2>&1 &"));
    assert!(out.status.success(), "ssh: {}", String::from_utf8_lossy(&out.stderr));
    vm::wait_console(admin, &g.id, 60, |c| c.contains(&format!("meridian-probe: {tag} done"))).await;
}

fn spoofed_ip(ip: &str) -> String {
    let (net, last) = ip.rsplit_once('.').expect("IPv4");
    let last: u8 = last.parse().expect("octet");
    format!("{net}.{}", if last < 200 { 200 } else { 201 })
}

async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_on_real_guests() {
    if !vm::enabled("security_groups_on_real_guests") {
        return;
    }
    let image = vm::image_dir();
    let fw = Firewall::new(Netns::default(), &format!("meridian_vm{}", std::process::id()));
    let tables = Tables(fw.clone());
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent = Agent::start_opts(
        &server,
        &format!("sg-{}", std::process::id()),
        vm::URI,
        &["--stop-timeout-secs", "30", "--firewall", "none"],
    );
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let f = json!({"flavor": {"name": "vm.sg", "ram": 256, "vcpus": 1, "disk": 1}});
    let flavor =
        admin.post("compute", "/flavors", &f).await.expect("flavor")["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let cidr = vm::private_subnet(11);
    let (net_id, subnet_id) = vm::network(&admin, "sgnet", &cidr).await;
    guard.network(&format!("meridian-{net_id}"));
    let subnet = admin.get("network", &format!("/v2.0/subnets/{subnet_id}")).await.expect("subnet");
    let gw = subnet["subnet"]["gateway_ip"].as_str().expect("gateway").to_string();
    let prefix = cidr.rsplit_once('/').expect("cidr").1.to_string();

    let home = tempfile::tempdir().expect("tmp");
    let key: PathBuf = home.path().join("id");
    let (private, public) = meridian_tui::keys::generate_ed25519("sg").expect("key");
    meridian_tui::keys::save_private_key(&key, &private).expect("save key");
    admin
        .post("compute", "/os-keypairs", &json!({"keypair": {"name": "sg", "public_key": public}}))
        .await
        .expect("key pair");

    let mut ids = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let body = json!({"server": {"name": name, "imageRef": image_id, "flavorRef": flavor,
            "networks": [{"uuid": net_id}], "key_name": "sg"}});
        let id = admin.post("compute", "/servers", &body).await.expect("boot")["server"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        guard.domain(&format!("meridian-{id}"));
        ids.push(id);
    }
    let mut guests = Vec::new();
    for id in &ids {
        let s = wait_server(&admin, id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
        assert_eq!(s["status"], "ACTIVE", "{s}");
        let log = vm::wait_console(&admin, id, BOOT_SECS, |c| c.contains(vm::READY)).await;
        assert!(log.contains("meridian-guest: ssh=dropbear keys=1"), "{log}");
        let p = admin.get("network", &format!("/v2.0/ports?device_id={id}")).await.expect("ports");
        let p = &p["ports"][0];
        let ip = p["fixed_ips"][0]["ip_address"].as_str().expect("ip").to_string();
        let port_id = p["id"].as_str().expect("port id").to_string();
        // The tap carries the port's name (Nova's), which is what the filters match.
        let xml = vm::virsh_ok(&["dumpxml", &format!("meridian-{id}")]);
        let tap = meridian_agent::firewall::tap_name(&port_id);
        assert!(xml.contains(&format!("<target dev='{tap}'/>")), "{xml}");
        let port = PortFilter {
            port_id,
            instance_id: id.clone(),
            network_id: net_id.clone(),
            mac_address: p["mac_address"].as_str().expect("mac").to_ascii_lowercase(),
            fixed_ips: vec![ip.clone()],
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            rules: vec![],
        };
        guests.push(Guest { id: id.clone(), ip, port });
    }
    let (a, b, c) = (&guests[0], &guests[1], &guests[2]);
    // Unfiltered first: every check below that fails, fails because of the filters.
    eventually(Duration::from_secs(60), "the host reaches beta unfiltered", || host_reaches(b)).await;
    assert!(guest_reaches_soon(&key, c, b), "gamma reaches beta unfiltered");
    assert!(guest_reaches_soon(&key, b, c), "beta reaches gamma unfiltered");
    assert!(guest_reaches_soon(&key, a, b), "alpha reaches beta unfiltered");
    let (listen_port, seen) = host_listener();

    let group = |g: &Guest, members: &[&str]| {
        let mut p = g.port.clone();
        p.rules = default_group(members, &gw);
        p
    };
    let (pa, pb, pc) = (group(a, &[&a.ip, &b.ip]), group(b, &[&a.ip, &b.ip]), group(c, &[&c.ip]));
    let mut generation = 0;
    let mut apply = |ports: &[&PortFilter]| {
        generation += 1;
        let started = Instant::now();
        fw.apply(&HostFilters { generation, ports: ports.iter().map(|p| (*p).clone()).collect() })
            .unwrap_or_else(|e| panic!("apply: {}", meridian_agent::controller::chain(&e)));
        started
    };
    apply(&[&pa, &pb, &pc]);

    // Only the default groups: the host cannot reach beta, alpha (same group) can, gamma (the
    // other project) cannot, nor can beta reach gamma.
    assert!(!host_reaches(b), "the host is not in beta's group");
    assert!(guest_reaches_soon(&key, a, b), "alpha, same group, reaches beta");
    assert!(!guest_reaches(&key, c, b), "gamma, another project, does not reach beta");
    assert!(!guest_reaches(&key, b, c), "beta does not reach gamma");

    // An ingress rule for 8080 from the host's address opens beta within a second; deleting it
    // closes it.
    let mut pb_open = pb.clone();
    pb_open.rules.push(rule(Direction::Ingress, Some(6), Some(8080), Some(vec![format!("{gw}/32")])));
    let started = apply(&[&pa, &pb_open, &pc]);
    eventually(Duration::from_secs(1), "beta open to the host", || host_reaches(b)).await;
    eprintln!("rule added → host reaches the guest: {:?}", started.elapsed());
    apply(&[&pa, &pb, &pc]);
    assert!(!host_reaches(b), "the rule was deleted");

    // Another project's guest only when a rule says so.
    let mut pb_from_c = pb.clone();
    pb_from_c.rules.push(rule(Direction::Ingress, Some(6), Some(8080), Some(vec![format!("{}/32", c.ip)])));
    apply(&[&pa, &pb_from_c, &pc]);
    assert!(guest_reaches_soon(&key, c, b), "gamma reaches beta by a rule");
    assert!(!guest_reaches(&key, b, c), "and only that way");

    // A guest that changes its IP or its MAC cannot send.
    for what in ["ip", "mac"] {
        spoof(&admin, &key, c, &gw, &prefix, listen_port, what).await;
    }
    let spoofed: Vec<String> = seen.lock().expect("lock").iter().filter(|l| l.contains("/spoof-")).cloned().collect();
    assert!(spoofed.is_empty(), "spoofed requests reached the host: {spoofed:?}");
    assert!(ssh(&key, &c.ip, "true").status.success(), "gamma is itself again after spoofing");

    // Port security off: no filtering at all (the same spoofing now gets through, and the host
    // reaches the guest without any rule).
    let mut pc_open = pc.clone();
    pc_open.port_security_enabled = false;
    apply(&[&pa, &pb, &pc_open]);
    eventually(Duration::from_secs(1), "the host reaches gamma without port security", || host_reaches(c)).await;
    for what in ["ip", "mac"] {
        spoof(&admin, &key, c, &gw, &prefix, listen_port, what).await;
    }
    let spoofed: Vec<String> = seen.lock().expect("lock").iter().filter(|l| l.contains("/spoof-")).cloned().collect();
    assert_eq!(spoofed.len(), 2, "without port security both got through: {spoofed:?}");

    // The guests' own view (console) is untouched by all this; the agent saw no errors.
    assert!(!agent.log_text().contains("ERROR"), "agent errors:\n{}", agent.log_text());
    drop(tables);
    let listed = Command::new("nft").args(["list", "tables"]).output().expect("nft");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&format!("meridian_vm{}", std::process::id())));
}
