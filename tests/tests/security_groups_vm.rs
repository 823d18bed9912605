//! Security groups enforced on real QEMU guests (`qemu:///system`) through the real path: the
//! real server and agent, the agent's nftables firewall following the server's port-filter
//! feed (its own table, `Agent::firewall_table`), groups and rules made through the Neutron API
//! by two projects' own users, guests booted with `security_groups`. Checked from the host (TCP
//! to the guests' busybox httpd on 8080) and from inside the guests (ssh, then busybox wget).
//!
//! Project A (user ann) boots alpha and beta, project B (user ben) gamma, all on one shared
//! network. Each project's default group gets one rule besides Neutron's own, through the API:
//! ssh from the host (the subnet's gateway, the host's address on the bridge), which is how the
//! test gets into the guests.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, reach, wait_hosts_up, wait_server};
use serde_json::{Value, json};

/// Hang guard (guests boot in seconds under TCG here).
const BOOT_SECS: u64 = 180;

/// What the issue asks of a rule change: in force (or gone) within a second of the API's answer.
const CHANGE: Duration = Duration::from_secs(1);

struct Guest {
    id: String,
    ip: String,
    mac: String,
    port_id: String,
}

impl Guest {
    fn http(&self) -> SocketAddr {
        format!("{}:8080", self.ip).parse().expect("address")
    }
}

/// A new project with a member user of its own; that user's client.
async fn member_of(server: &Server, admin: &Client, user: &str, project: &str) -> Client {
    let p = admin.post("identity", "/v3/projects", &json!({"project": {"name": project}})).await.expect("project");
    let pid = p["project"]["id"].as_str().expect("pid").to_string();
    let u =
        admin.post("identity", "/v3/users", &json!({"user": {"name": user, "password": "pw"}})).await.expect("user");
    let uid = u["user"]["id"].as_str().expect("uid").to_string();
    let roles = admin.get("identity", "/v3/roles?name=member").await.expect("roles");
    let rid = roles["roles"][0]["id"].as_str().expect("rid").to_string();
    admin.put("identity", &format!("/v3/projects/{pid}/users/{uid}/roles/{rid}"), &Value::Null).await.expect("grant");
    Client::login(&server.creds(user, "pw", project)).await.expect("login")
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
/// boot, and the first ssh, can take longer than one try's timeout).
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

/// Whether the host gets `to`'s page on 8080 (a dropped SYN: false after a second).
fn host_reaches(to: &Guest) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&to.http(), Duration::from_secs(1)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
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

fn spoofed_requests(seen: &Mutex<Vec<String>>) -> Vec<String> {
    seen.lock().expect("lock").iter().filter(|l| l.contains("/spoof-")).cloned().collect()
}

/// Makes `g` try to reach the host's listener as someone else (`ip` or `mac` changed), then
/// put itself back; waits for its console to say it finished. The ssh session cannot live
/// through the change, so the guest runs it detached.
async fn spoof(client: &Client, key: &Path, g: &Guest, gw: &str, prefix: &str, port: u16, what: &str) {
    let (ip, mac) = (&g.ip, &g.mac);
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
    vm::wait_console(client, &g.id, 60, |c| c.contains(&format!("meridian-probe: {tag} done"))).await;
}

fn spoofed_ip(ip: &str) -> String {
    let (net, last) = ip.rsplit_once('.').expect("IPv4");
    let last: u8 = last.parse().expect("octet");
    format!("{net}.{}", if last < 200 { 200 } else { 201 })
}

/// Boots `name` as `client`'s project in its default group (named in the request) with key
/// pair `sg`; returns the id.
async fn boot(client: &Client, guard: &LibvirtGuard, name: &str, image: &str, flavor: &str, net: &str) -> String {
    let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor,
        "networks": [{"uuid": net}], "key_name": "sg", "security_groups": [{"name": "default"}]}});
    let id = client.post("compute", "/servers", &body).await.expect("boot")["server"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    guard.domain(&format!("meridian-{id}"));
    id
}

/// Waits for `id` to be up with its key; its port must be in `group` alone.
async fn booted(client: &Client, id: &str, group: &str) -> Guest {
    let s = wait_server(client, id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let log = vm::wait_console(client, id, BOOT_SECS, |c| c.contains(vm::READY)).await;
    assert!(log.contains("meridian-guest: ssh=dropbear keys=1"), "{log}");
    let p = client.get("network", &format!("/v2.0/ports?device_id={id}")).await.expect("ports");
    let p = &p["ports"][0];
    assert_eq!(p["security_groups"], json!([group]), "{p}");
    assert_eq!(p["port_security_enabled"], true, "{p}");
    Guest {
        id: id.to_string(),
        ip: p["fixed_ips"][0]["ip_address"].as_str().expect("ip").to_string(),
        mac: p["mac_address"].as_str().expect("mac").to_ascii_lowercase(),
        port_id: p["id"].as_str().expect("port id").to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_on_real_guests() {
    if !vm::enabled("security_groups_on_real_guests") {
        return;
    }
    let image = vm::image_dir();
    // Dropped last: the domains and the network go after the agent (which removes its tables).
    let guard = LibvirtGuard::default();
    let server = Server::start();
    // The default firewall (`auto`: nftables on qemu:///system), following the server's feed.
    let agent =
        Agent::start_opts(&server, &format!("sg-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "30"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let f = json!({"flavor": {"name": "vm.sg", "ram": 256, "vcpus": 1, "disk": 1}});
    let flavor =
        admin.post("compute", "/flavors", &f).await.expect("flavor")["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;

    // One network both projects use (the admin's, shared).
    let cidr = vm::private_subnet(11);
    let net = admin.post("network", "/v2.0/networks", &json!({"network": {"name": "sgnet", "shared": true}})).await;
    let net_id = net.expect("network")["network"]["id"].as_str().expect("id").to_string();
    guard.network(&format!("meridian-{net_id}"));
    let sub = json!({"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4}});
    let sub = admin.post("network", "/v2.0/subnets", &sub).await.expect("subnet");
    let subnet_id = sub["subnet"]["id"].as_str().expect("id").to_string();
    let gw = vm::gateway(&admin, &subnet_id).await;
    let prefix = cidr.rsplit_once('/').expect("cidr").1.to_string();

    // Two projects with a user each, the same ssh key, ssh from the host in each default group.
    let a = member_of(&server, &admin, "ann", "sg-a").await;
    let b = member_of(&server, &admin, "ben", "sg-b").await;
    let home = tempfile::tempdir().expect("tmp");
    let key: PathBuf = home.path().join("id");
    let (private, public) = meridian_tui::keys::generate_ed25519("sg").expect("key");
    meridian_tui::keys::save_private_key(&key, &private).expect("save key");
    for c in [&a, &b] {
        c.post("compute", "/os-keypairs", &json!({"keypair": {"name": "sg", "public_key": public}}))
            .await
            .expect("key pair");
        vm::allow_ssh_from_host(c, &subnet_id).await;
    }
    let (group_a, group_b) = (vm::default_group(&a).await, vm::default_group(&b).await);
    assert_ne!(group_a, group_b);

    let ids = [
        boot(&a, &guard, "alpha", &image_id, &flavor, &net_id).await,
        boot(&a, &guard, "beta", &image_id, &flavor, &net_id).await,
        boot(&b, &guard, "gamma", &image_id, &flavor, &net_id).await,
    ];
    let alpha = booted(&a, &ids[0], &group_a).await;
    let beta = booted(&a, &ids[1], &group_a).await;
    let gamma = booted(&b, &ids[2], &group_b).await;

    // The agent enforces in its own table, whose maps name the guests' taps.
    let table = agent.firewall_table();
    let listed = Command::new("nft").args(["list", "table", "bridge", &table]).output().expect("nft");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for g in [&alpha, &beta, &gamma] {
        assert!(listed.contains(&meridian_agent::firewall::tap_name(&g.port_id)), "{table}:\n{listed}");
    }

    // Only the default group (and ssh): alpha, in beta's group, reaches beta's 8080; the host
    // does not, nor does gamma (the other project), nor does beta reach gamma. Each of these
    // refusals is shown to be the filters' by a rule or a switch that lifts it further down.
    assert!(guest_reaches_soon(&key, &alpha, &beta), "alpha, same group, reaches beta");
    assert!(!host_reaches(&beta), "the host is not in beta's group");
    assert!(!guest_reaches(&key, &gamma, &beta), "gamma, another project, does not reach beta");
    assert!(!guest_reaches(&key, &beta, &gamma), "beta does not reach gamma");

    // An ingress rule for 8080 from the host's address opens beta within a second of the API's
    // answer; deleting it closes it within a second.
    let rule = vm::allow_ingress(&a, &group_a, "tcp", Some(8080), &format!("{gw}/32")).await;
    let added = Instant::now();
    let opened = reach::opened(beta.http(), added, CHANGE).await;
    let opened = opened.unwrap_or_else(|| panic!("beta not open to the host within {CHANGE:?}"));
    eprintln!("rule added → the host's connect to beta:8080 went through after {opened:?}");
    assert!(host_reaches(&beta), "the host gets beta's page");
    a.delete("network", &format!("/v2.0/security-group-rules/{rule}")).await.expect("delete rule");
    let deleted = Instant::now();
    let closed = reach::closed(beta.http(), deleted, CHANGE, Duration::from_secs(1)).await;
    let closed = closed.unwrap_or_else(|| panic!("beta still open to the host {CHANGE:?} after the rule's delete"));
    eprintln!("rule deleted → the host's connects to beta:8080 refused from {closed:?}");
    assert!(!host_reaches(&beta), "the rule was deleted");

    // The other project's guest only when a rule says so (and only that way).
    let rule = vm::allow_ingress(&a, &group_a, "tcp", Some(8080), &format!("{}/32", gamma.ip)).await;
    assert!(guest_reaches_soon(&key, &gamma, &beta), "gamma reaches beta by a rule");
    assert!(!guest_reaches(&key, &beta, &gamma), "beta still does not reach gamma");
    a.delete("network", &format!("/v2.0/security-group-rules/{rule}")).await.expect("delete rule");
    tokio::time::sleep(CHANGE).await;
    assert!(!guest_reaches(&key, &gamma, &beta), "the rule was deleted");

    // A guest that changes its IP or its MAC cannot send (here: to a listener on the host,
    // which egress "anywhere" would otherwise admit, as the unspoofed end of this test shows).
    let (listen_port, seen) = host_listener();
    for what in ["ip", "mac"] {
        spoof(&b, &key, &gamma, &gw, &prefix, listen_port, what).await;
    }
    assert_eq!(spoofed_requests(&seen), Vec::<String>::new(), "spoofed requests reached the host");
    assert!(ssh(&key, &gamma.ip, "true").status.success(), "gamma is itself again after spoofing");

    // Port security off (and so no groups; the network's owner may switch it): nothing is
    // filtered. The host and beta reach gamma without any rule, and the same spoofing gets
    // through.
    let off = json!({"port": {"port_security_enabled": false, "security_groups": []}});
    let port = admin.put("network", &format!("/v2.0/ports/{}", gamma.port_id), &off).await.expect("port update");
    assert_eq!((&port["port"]["port_security_enabled"], &port["port"]["security_groups"]), (&json!(false), &json!([])));
    let switched = Instant::now();
    let opened = reach::opened(gamma.http(), switched, CHANGE).await;
    assert!(opened.is_some(), "gamma not open to the host within {CHANGE:?} of port security off");
    assert!(host_reaches(&gamma), "the host gets gamma's page");
    assert!(guest_reaches_soon(&key, &beta, &gamma), "beta reaches gamma without port security");
    for what in ["ip", "mac"] {
        spoof(&b, &key, &gamma, &gw, &prefix, listen_port, what).await;
    }
    assert_eq!(
        spoofed_requests(&seen).len(),
        2,
        "without port security both got through: {:?}",
        spoofed_requests(&seen)
    );

    assert!(!agent.log_text().contains("ERROR"), "agent errors:\n{}", agent.log_text());
    drop(agent);
    let tables = Command::new("nft").args(["list", "tables"]).output().expect("nft");
    assert!(!String::from_utf8_lossy(&tables.stdout).contains(&table), "the agent's table outlived the test");
}
