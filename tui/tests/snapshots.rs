//! Whole-screen snapshots: the app with injected channels, fed keys and fake worker responses,
//! drawn into ratatui's `TestBackend`. IDs are filtered; the clock is fixed.

use chrono::{DateTime, TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use meridian_tui::app::{App, AppConfig, Screen, View};
use meridian_tui::config::Profile;
use meridian_tui::login::{LoginForm, Picker};
use meridian_tui::model::{Flavor, Hypervisor, Image, Keypair, Network, Quotas, Server, Service, Transition};
use meridian_tui::views::ports::Port;
use meridian_tui::views::subnets::Subnet;
use meridian_tui::worker::{Kind, Listing, Overview, Request, Response, ServerOp, SessionInfo};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 3, 0, 0).single().expect("time")
}

fn id(n: u32) -> String {
    format!("{n:08x}-1111-4222-8333-444455556666")
}

fn server(n: u32, name: &str, status: &str, task: Option<&str>, power: i64) -> Server {
    let raw = json!({
        "id": id(n), "name": name, "status": status,
        "OS-EXT-STS:task_state": task, "OS-EXT-STS:vm_state": status.to_lowercase(), "OS-EXT-STS:power_state": power,
        "addresses": {"net": [{"addr": format!("10.0.0.{n}"), "version": 4, "OS-EXT-IPS:type": "fixed"}]},
        "flavor": {"original_name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
        "image": {"id": id(900)}, "OS-EXT-SRV-ATTR:host": "compute-1",
        "created": "2026-11-22T02:00:00Z", "updated": "2026-11-22T02:30:00Z", "key_name": null,
    });
    meridian_tui::model::parse_server(&raw).expect("server")
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture")
}

fn flavors() -> Vec<Flavor> {
    [
        ("1", "m1.tiny", 1, 512, 1),
        ("2", "m1.small", 1, 2048, 20),
        ("3", "m1.medium", 2, 4096, 40),
        ("5", "m1.xlarge", 8, 16384, 160),
    ]
    .into_iter()
    .map(|(id, name, vcpus, ram, disk)| {
        let raw = json!({"id": id, "name": name, "vcpus": vcpus, "ram": ram, "disk": disk,
                "OS-FLV-EXT-DATA:ephemeral": 0, "os-flavor-access:is_public": true});
        let mut f: Flavor = parse(raw.clone());
        f.raw = raw;
        f
    })
    .collect()
}

fn images() -> Vec<Image> {
    vec![
        {
            let raw = json!({"id": id(900), "name": "cirros", "status": "active", "visibility": "public",
                "disk_format": "qcow2", "size": 21430272, "min_ram": 1024, "min_disk": 2, "created_at": "2026-11-20T00:00:00Z"});
            let mut i: Image = parse(raw.clone());
            i.raw = raw;
            i
        },
        {
            let raw = json!({"id": id(901), "name": "debian-13", "status": "active", "visibility": "shared",
                "disk_format": "raw", "size": 2147483648u64, "min_ram": 0, "min_disk": 0, "created_at": "2026-11-21T12:00:00Z"});
            let mut i: Image = parse(raw.clone());
            i.raw = raw;
            i
        },
    ]
}

fn networks() -> Vec<Network> {
    ["net", "private"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let raw = json!({"id": id(800 + i as u32), "name": name, "status": "ACTIVE", "shared": i == 0,
                "router:external": false, "subnets": [id(850 + i as u32)]});
            let mut n: Network = parse(raw.clone());
            n.subnet_cidrs = vec![format!("10.{i}.0.0/24")];
            n.raw = raw;
            n
        })
        .collect()
}

fn keypairs() -> Vec<Keypair> {
    let raw = json!({"name": "laptop", "fingerprint": "SHA256:abcdefghijklmnop", "type": "ssh"});
    let mut k: Keypair = parse(raw.clone());
    k.raw = raw;
    vec![k]
}

fn hypervisors() -> Vec<Hypervisor> {
    (1..=2)
        .map(|n| {
            let raw = json!({"id": id(700 + n), "hypervisor_hostname": format!("compute-{n}"), "state": "up",
                "status": "enabled", "hypervisor_type": "QEMU", "vcpus": 16, "vcpus_used": 4 * n, "memory_mb": 32768,
                "memory_mb_used": 8192 * n, "local_gb": 500, "local_gb_used": 100 * n, "running_vms": 2 * n});
            let mut h: Hypervisor = parse(raw.clone());
            h.raw = raw;
            h
        })
        .collect()
}

fn services() -> Vec<Service> {
    [("nova-scheduler", "controller", "up"), ("nova-compute", "compute-1", "up"), ("nova-compute", "compute-2", "down")]
        .iter()
        .enumerate()
        .map(|(i, (b, h, st))| {
            let raw = json!({"id": i + 1, "binary": b, "host": h, "zone": "nova", "status": "enabled", "state": st,
                "updated_at": "2026-11-22T02:59:50Z"});
            let mut s: Service = parse(raw.clone());
            s.raw = raw;
            s
        })
        .collect()
}

fn ports() -> Vec<Port> {
    [(1, "web-1", "p1"), (2, "", "p1"), (3, "db", "p2")]
        .into_iter()
        .map(|(n, name, project)| {
            let raw = json!({"id": id(700 + n), "name": name, "status": "ACTIVE", "network_id": "n1",
                "mac_address": format!("fa:16:3e:00:00:0{n}"), "device_owner": "compute:nova",
                "device_id": id(n), "project_id": project,
                "fixed_ips": [{"ip_address": format!("10.0.0.{n}"), "subnet_id": "s1"}]});
            let mut p: Port = parse(raw.clone());
            p.raw = raw;
            p.network_name = "private".into();
            p
        })
        .collect()
}

fn subnets() -> Vec<Subnet> {
    [
        (1, "private-v4", "10.0.0.0/24", Some("10.0.0.1"), true, vec!["8.8.8.8"]),
        (2, "isolated", "192.168.5.0/24", None, false, vec![]),
    ]
    .into_iter()
    .map(|(n, name, cidr, gw, dhcp, dns)| {
        let raw = json!({"id": id(800 + n), "name": name, "network_id": "n1", "cidr": cidr, "ip_version": 4,
                "gateway_ip": gw, "enable_dhcp": dhcp, "dns_nameservers": dns, "project_id": "p1"});
        let mut s: Subnet = parse(raw.clone());
        s.raw = raw;
        s.network_name = "private".into();
        s
    })
    .collect()
}

fn secgroups() -> Vec<meridian_tui::views::secgroups::SecGroup> {
    let rule = |dir: &str, eth: &str| json!({"direction": dir, "ethertype": eth});
    [
        (
            "g-default",
            "default",
            "Default security group",
            vec![rule("ingress", "IPv4"), rule("ingress", "IPv6"), rule("egress", "IPv4"), rule("egress", "IPv6")],
            3,
        ),
        (
            "g-web",
            "web",
            "http and https from anywhere",
            vec![rule("ingress", "IPv4"), rule("ingress", "IPv4"), rule("egress", "IPv4"), rule("egress", "IPv6")],
            1,
        ),
    ]
    .into_iter()
    .map(|(id, name, desc, rules, ports)| {
        let raw = json!({"id": id, "name": name, "description": desc, "stateful": true,
            "security_group_rules": rules, "project_id": "p1"});
        let mut g: meridian_tui::views::secgroups::SecGroup = parse(raw.clone());
        g.raw = raw;
        g.ports = ports;
        g
    })
    .collect()
}

fn secrules() -> Vec<meridian_tui::views::secrules::SecRule> {
    let rules = [
        json!({"id": "r1", "security_group_id": "g-default", "direction": "ingress", "ethertype": "IPv4",
            "remote_group_id": "g-default"}),
        json!({"id": "r2", "security_group_id": "g-default", "direction": "egress", "ethertype": "IPv4"}),
        json!({"id": "r3", "security_group_id": "g-web", "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0",
            "description": "http"}),
        json!({"id": "r4", "security_group_id": "g-web", "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": 8000, "port_range_max": 8100, "remote_ip_prefix": "10.0.0.0/8"}),
        json!({"id": "r5", "security_group_id": "g-web", "direction": "ingress", "ethertype": "IPv4",
            "protocol": "icmp", "port_range_min": 8, "port_range_max": 0, "remote_ip_prefix": "0.0.0.0/0"}),
    ];
    rules
        .into_iter()
        .map(|raw| {
            let mut r: meridian_tui::views::secrules::SecRule = parse(raw.clone());
            r.group_name = if r.security_group_id == "g-web" { "web".into() } else { "default".into() };
            r.remote_group_name = r.remote_group_id.as_ref().map(|_| "default".to_string());
            r.raw = raw;
            r
        })
        .collect()
}

fn volumes() -> Vec<meridian_tui::views::volumes::Volume> {
    [
        json!({"id": "v-data", "name": "data", "status": "in-use", "size": 10, "volume_type": "__DEFAULT__",
            "bootable": "false", "attachments": [{"server_id": id(1), "device": "/dev/vdb", "attachment_id": "a1"}],
            "created_at": "2026-11-21T12:00:00Z"}),
        json!({"id": "v-root", "name": "root", "status": "available", "size": 2, "volume_type": "__DEFAULT__",
            "bootable": "true", "attachments": [], "created_at": "2026-11-22T02:30:00Z"}),
    ]
    .into_iter()
    .map(|raw| {
        let mut v: meridian_tui::views::volumes::Volume = parse(raw.clone());
        v.attached_names = v.attachments.iter().map(|_| "web-1".to_string()).collect();
        v.raw = raw;
        v
    })
    .collect()
}

fn vol_snapshots() -> Vec<meridian_tui::views::snapshots::Snapshot> {
    let raw = json!({"id": "s-1", "name": "data-nightly", "status": "available", "size": 10, "volume_id": "v-data",
        "description": "before the upgrade", "created_at": "2026-11-22T00:00:00Z"});
    let mut s: meridian_tui::views::snapshots::Snapshot = parse(raw.clone());
    s.volume_name = "data".into();
    s.raw = raw;
    vec![s]
}

fn server_groups() -> Vec<meridian_tui::views::server_groups::ServerGroup> {
    [
        json!({"id": "sg-1", "name": "spread", "policy": "anti-affinity", "rules": {"max_server_per_host": 2},
            "members": [id(1), id(2)], "project_id": "p1"}),
        json!({"id": "sg-2", "name": "together", "policy": "affinity", "rules": {}, "members": [], "project_id": "p1"}),
    ]
    .into_iter()
    .map(|raw| {
        let mut g: meridian_tui::views::server_groups::ServerGroup = parse(raw.clone());
        g.member_names = vec!["web-1".into(), "web-2".into()];
        g.raw = raw;
        g
    })
    .collect()
}

fn aggregates() -> Vec<meridian_tui::views::aggregates::Aggregate> {
    [
        json!({"id": 1, "name": "fast", "availability_zone": "az-fast", "hosts": ["compute-1"],
            "metadata": {"availability_zone": "az-fast", "ssd": "true"}}),
        json!({"id": 2, "name": "spare", "availability_zone": null, "hosts": [], "metadata": {}}),
    ]
    .into_iter()
    .map(|raw| {
        let mut a: meridian_tui::views::aggregates::Aggregate = parse(raw.clone());
        a.key = a.id.to_string();
        a.raw = raw;
        a
    })
    .collect()
}

fn quotas() -> Quotas {
    Quotas {
        items: vec![
            ("Instances".into(), 3, 10),
            ("vCPUs".into(), 3, 4),
            ("RAM (MB)".into(), 6144, 51200),
            ("Networks".into(), 2, 100),
            ("Ports".into(), 3, 500),
        ],
    }
}

struct Harness {
    app: App,
    rx: UnboundedReceiver<Request>,
    term: Terminal<TestBackend>,
}

impl Harness {
    fn new(w: u16, h: u16) -> Harness {
        let (tx, rx) = unbounded_channel();
        let mut app = App::new(tx, Screen::Main, AppConfig::default());
        app.clock = Some(now());
        Harness { app, rx, term: Terminal::new(TestBackend::new(w, h)).expect("terminal") }
    }

    /// Logged in (as admin or not) with every list loaded.
    fn loaded(w: u16, h: u16, admin: bool) -> Harness {
        let mut hs = Harness::new(w, h);
        hs.app.on_response(Response::LoggedIn(SessionInfo {
            cloud: "devstack".into(),
            auth_url: "http://cloud/identity".into(),
            user: if admin { "admin".into() } else { "alice".into() },
            project: "demo".into(),
            project_id: "p1".into(),
            admin,
            expires_at: None,
            compute_version: Some("2.79".into()),
        }));
        hs.app.on_response(Response::Listed(Listing::Images(images())));
        hs.app.on_response(Response::Listed(Listing::Flavors(flavors())));
        hs.app.on_response(Response::Listed(Listing::Servers(vec![
            server(1, "web-1", "ACTIVE", None, 1),
            server(2, "web-2", "BUILD", Some("spawning"), 0),
            server(3, "db", "SHUTOFF", None, 4),
            server(4, "broken", "ERROR", None, 0),
        ])));
        hs.app.on_response(Response::Listed(Listing::Networks(networks())));
        hs.app.on_response(Response::Listed(Listing::Keypairs(keypairs())));
        hs.app.on_response(Response::Listed(Listing::Ports(ports())));
        hs.app.on_response(Response::Listed(Listing::Subnets(subnets())));
        hs.app.on_response(Response::Listed(Listing::SecGroups(secgroups())));
        hs.app.on_response(Response::Listed(Listing::SecRules(secrules())));
        hs.app.on_response(Response::Listed(Listing::Volumes(volumes())));
        hs.app.on_response(Response::Listed(Listing::Snapshots(vol_snapshots())));
        hs.app.on_response(Response::Listed(Listing::IdProjects(Vec::new())));
        hs.app.on_response(Response::Listed(Listing::Users(Vec::new())));
        hs.app.on_response(Response::Listed(Listing::Assignments(Vec::new())));
        hs.app.on_response(Response::Listed(Listing::Hypervisors(hypervisors())));
        hs.app.on_response(Response::Listed(Listing::Services(services())));
        hs.app.on_response(Response::Listed(Listing::ServerGroups(server_groups())));
        hs.app.on_response(Response::Listed(Listing::Aggregates(aggregates())));
        hs.app.on_response(Response::Overview(Overview {
            quotas: quotas(),
            hypervisors: if admin { hypervisors() } else { vec![] },
            ..Overview::default()
        }));
        hs.app.on_response(Response::LiveMode("live".into()));
        hs.drain();
        hs
    }

    fn drain(&mut self) -> Vec<Request> {
        let mut v = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            v.push(r);
        }
        v
    }

    fn key(&mut self, code: KeyCode) {
        self.app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    }
    fn ctrl(&mut self, c: char) {
        self.app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL));
    }
    fn chars(&mut self, s: &str) {
        for c in s.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    fn screen(&mut self) -> String {
        self.term.draw(|f| self.app.draw(f)).expect("draw");
        // The frame's text, one line per row (colours are not part of the snapshot).
        let buf = self.term.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

macro_rules! snap {
    ($name:expr, $text:expr) => {
        insta::with_settings!({filters => vec![
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[uuid]"),
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{0,4}…?", "[uuid…]"),
        ]}, {
            insta::assert_snapshot!($name, $text);
        });
    };
}

#[test]
fn instances_view_at_80x24_for_a_member() {
    let mut h = Harness::loaded(80, 24, false);
    let s = h.screen();
    assert!(s.contains("web-2") && s.contains("spawning"), "{s}");
    assert!(!s.contains("HOST"), "members see no host column");
    // Idle with live tracking: only a slow redraw for the AGE column, no requests.
    let wake = h.app.next_wake().expect("ages are redrawn");
    assert!(wake >= std::time::Duration::from_secs(30), "{wake:?}");
    h.app.go_to(View::Images);
    h.app.on_response(Response::Listed(Listing::Images(images())));
    let wake = h.app.next_wake().expect("a stable list is reloaded later");
    assert!(wake > std::time::Duration::from_secs(50), "{wake:?}");
    h.app.go_to(View::Servers);
    h.app.on_response(Response::Listed(Listing::Servers(vec![])));
    h.app.on_response(Response::Listed(Listing::Servers(vec![
        server(1, "web-1", "ACTIVE", None, 1),
        server(2, "web-2", "BUILD", Some("spawning"), 0),
        server(3, "db", "SHUTOFF", None, 4),
        server(4, "broken", "ERROR", None, 0),
    ])));
    snap!("instances_member_80x24", s);
}

#[test]
fn instances_view_wide_for_an_admin() {
    let mut h = Harness::loaded(140, 20, true);
    let s = h.screen();
    assert!(s.contains("HOST") && s.contains("compute-1") && s.contains("Hypervisors"), "{s}");
    snap!("instances_admin_140x20", s);
}

#[test]
fn every_list_view() {
    for v in [
        View::Flavors,
        View::Images,
        View::Networks,
        View::Subnets,
        View::Ports,
        View::Keypairs,
        View::Hypervisors,
        View::Services,
    ] {
        let mut h = Harness::loaded(100, 16, true);
        h.app.go_to(v);
        // Going to a view reloads it.
        assert!(matches!(h.drain().as_slice(), [Request::List(_)]));
        snap!(format!("view_{}", v.command()), h.screen());
    }
}

#[test]
fn overview_with_quota_gauges_and_hypervisors() {
    let mut h = Harness::loaded(80, 24, true);
    h.app.run_command("overview");
    assert_eq!(h.drain(), vec![Request::Overview]);
    let s = h.screen();
    assert!(s.contains("vCPUs") && s.contains("compute-2"), "{s}");
    snap!("overview_admin", s);
}

#[test]
fn sort_and_filter() {
    let mut h = Harness::loaded(80, 12, false);
    h.chars("/");
    h.chars("web");
    let s = h.screen();
    assert!(s.contains("web-1") && !s.contains("broken"), "{s}");
    snap!("filter_web", s);
    h.key(KeyCode::Enter);
    h.key(KeyCode::Esc);
    h.chars("/");
    h.key(KeyCode::Esc); // clears the filter
    h.chars("o"); // sort by name
    h.chars("O"); // descending
    let s = h.screen();
    let pos = |n: &str| s.find(n).expect(n);
    assert!(pos("web-2") < pos("db") && pos("db") < pos("broken"), "{s}");
    snap!("sorted_by_name_desc", s);
}

#[test]
fn detail_fields_json_and_yaml() {
    let mut h = Harness::loaded(80, 24, false);
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("OS-EXT-STS:vm_state") && s.contains("flavor.original_name"), "{s}");
    snap!("detail_fields", s);
    h.chars("v");
    snap!("detail_json", h.screen());
    h.chars("v");
    snap!("detail_yaml", h.screen());
    h.key(KeyCode::Esc);
    assert!(h.screen().contains("ADDRESSES"));
}

#[test]
fn instance_timeline_with_phase_durations() {
    let mut h = Harness::loaded(80, 24, false);
    h.key(KeyCode::Enter);
    h.key(KeyCode::Tab);
    assert_eq!(h.drain(), vec![Request::Timeline(id(1))]);
    let t = |vm: &str, task: Option<&str>, power: i64, at: &str, d: Option<f64>| Transition {
        vm_state: Some(vm.into()),
        task_state: task.map(str::to_string),
        power_state: Some(power),
        at: meridian_tui::model::parse_time(at),
        duration_s: d,
    };
    h.app.on_response(Response::Timeline {
        id: id(1),
        entries: vec![
            t("building", Some("scheduling"), 0, "2026-11-22T02:00:00.123456Z", Some(0.012)),
            t("building", Some("networking"), 0, "2026-11-22T02:00:00.135Z", Some(0.2)),
            t("building", Some("block_device_mapping"), 0, "2026-11-22T02:00:00.335Z", Some(3.5)),
            t("building", Some("spawning"), 0, "2026-11-22T02:00:03.835Z", Some(1.25)),
            t("active", None, 1, "2026-11-22T02:00:05.085Z", None),
        ],
        source: "state transitions",
    });
    let s = h.screen();
    assert!(s.contains("block_device_mapping") && s.contains("3.5 s") && s.contains("12 ms"), "{s}");
    snap!("timeline", s);
    // A transition from the live stream extends the open timeline at once.
    h.app.on_response(Response::Transition {
        server_id: id(1),
        entry: t("active", Some("powering-off"), 1, "2026-11-22T02:10:05.085Z", None),
    });
    let s = h.screen();
    assert!(s.contains("powering-off") && s.contains("10.0 min") && s.contains("6 steps"), "{s}");
    // A live change of this instance reloads its timeline.
    h.app.on_response(Response::ServerUpdate(Box::new(server(1, "web-1", "ACTIVE", Some("powering-off"), 1))));
    assert_eq!(h.drain(), vec![Request::Timeline(id(1))]);
}

/// Other clouds' timelines come from instance actions: Nova's event names show in words.
#[test]
fn timeline_from_instance_actions_in_words() {
    let mut h = Harness::loaded(80, 16, false);
    h.key(KeyCode::Enter);
    h.key(KeyCode::Tab);
    h.drain();
    let t = |action: &str, event: Option<&str>, at: &str, d: Option<f64>| Transition {
        vm_state: Some(action.into()),
        task_state: event.map(str::to_string),
        power_state: None,
        at: meridian_tui::model::parse_time(at),
        duration_s: d,
    };
    h.app.on_response(Response::Timeline {
        id: id(1),
        entries: vec![
            t("create", None, "2026-11-22T02:00:00Z", Some(0.1)),
            t("create", Some("conductor_schedule_and_build_instances"), "2026-11-22T02:00:00.100Z", Some(0.4)),
            t("create", Some("compute__do_build_and_run_instance"), "2026-11-22T02:00:00.500Z", Some(4.5)),
            t("stop", None, "2026-11-22T02:10:00Z", Some(0.2)),
            t("stop", Some("compute_stop_instance"), "2026-11-22T02:10:00.200Z", None),
        ],
        source: "instance actions",
    });
    let s = h.screen();
    assert!(s.contains("build and run") && s.contains("power off") && s.contains("schedule and build"), "{s}");
    assert!(!s.contains("compute_"), "raw event names: {s}");
    snap!("timeline_instance_actions", s);
}

#[test]
fn console_log_follows_the_end_and_scrolls_back() {
    let mut h = Harness::loaded(80, 12, false);
    h.chars("l");
    assert_eq!(h.drain(), vec![Request::Console(id(1))]);
    let log: String = (1..=40).map(|i| format!("[    {i}.000] boot line {i}\n")).collect();
    h.app.on_response(Response::Console { id: id(1), output: log });
    let s = h.screen();
    assert!(s.contains("boot line 40 ") && !s.contains("boot line 1 "), "{s}");
    snap!("console_following", s);
    assert!(h.app.next_wake().is_some(), "following polls the log again");
    h.key(KeyCode::Home);
    let s = h.screen();
    assert!(s.contains("boot line 1 "), "{s}");
    assert!(!s.contains("following"), "scrolling up stops following");
}

#[test]
fn help_is_built_from_the_keymap() {
    let mut h = Harness::loaded(80, 36, false);
    h.chars("?");
    let s = h.screen();
    assert!(s.contains("ctrl-d") && s.contains("delete (asks first)"), "{s}");
    snap!("help", s);
}

#[test]
fn palette_completes_and_jumps() {
    let mut h = Harness::loaded(80, 24, false);
    h.chars(":");
    h.chars("im");
    let s = h.screen();
    snap!("palette_im", s);
    h.key(KeyCode::Tab);
    h.key(KeyCode::Enter);
    assert_eq!(h.app.view(), View::Images);
    assert_eq!(h.drain(), vec![Request::List(Kind::Images)]);
    h.chars(":");
    h.chars("nonsense");
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("unknown command :nonsense"), "{s}");
}

#[test]
fn actions_show_the_expected_state_at_once_then_the_real_one() {
    let mut h = Harness::loaded(80, 12, false);
    h.chars("S"); // stop web-1
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Stop }]);
    let s = h.screen();
    assert!(s.contains("powering-off"), "{s}");
    snap!("stop_expected", s);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Stop });
    h.app.on_response(Response::ServerUpdate(Box::new(server(1, "web-1", "SHUTOFF", None, 4))));
    let s = h.screen();
    assert!(s.contains("SHUTOFF") && !s.contains("powering-off"), "{s}");
}

#[test]
fn a_failed_action_restores_the_row_and_offers_a_retry() {
    let mut h = Harness::loaded(100, 12, false);
    h.key(KeyCode::Down);
    h.key(KeyCode::Down); // db, SHUTOFF
    h.chars("r"); // soft reboot of a stopped server: the cloud refuses
    let reqs = h.drain();
    assert_eq!(reqs, vec![Request::Action { id: id(3), op: ServerOp::Reboot }]);
    h.app.on_response(Response::Failed {
        request: reqs[0].clone(),
        message: "reboot failed: Cannot 'reboot' instance while it is in vm_state stopped (409)".into(),
    });
    let s = h.screen();
    assert!(s.contains("SHUTOFF") && !s.contains("REBOOT"), "{s}");
    assert!(s.contains("<R>retry"), "{s}");
    snap!("action_error", s);
    h.chars("R");
    assert_eq!(h.drain(), reqs, "retry sends the same request");
}

#[test]
fn delete_asks_first() {
    let mut h = Harness::loaded(80, 24, false);
    h.ctrl('d');
    let s = h.screen();
    assert!(s.contains("Delete instance web-1?"), "{s}");
    snap!("confirm_delete", s);
    h.chars("n");
    assert!(h.drain().is_empty(), "no means no");
    h.ctrl('d');
    h.chars("y");
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Delete }]);
    h.app.on_response(Response::ServerUpdate(Box::new(Server {
        id: id(1),
        status: "DELETED".into(),
        ..Server::default()
    })));
    assert!(!h.screen().contains("web-1"));
}

#[test]
fn live_updates_move_rows_without_a_key() {
    let mut h = Harness::loaded(80, 12, false);
    h.app.on_response(Response::ServerUpdate(Box::new(server(2, "web-2", "ACTIVE", None, 1))));
    h.app.on_response(Response::ServerUpdate(Box::new(server(9, "new-one", "BUILD", Some("scheduling"), 0))));
    let s = h.screen();
    assert!(s.contains("new-one") && !s.contains("spawning"), "{s}");
}

fn wizard(h: &mut Harness) {
    h.chars("c");
    let reqs = h.drain();
    assert!(reqs.contains(&Request::List(Kind::Images)) && reqs.contains(&Request::Overview), "{reqs:?}");
}

#[test]
fn launch_wizard_every_step() {
    let mut h = Harness::loaded(80, 24, false);
    wizard(&mut h);
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("the instance needs a name"), "invalid input explained in place: {s}");
    snap!("wizard_1_name_error", s);
    h.chars("app");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Backspace);
    h.chars("2");
    h.key(KeyCode::Tab);
    h.chars("0");
    h.key(KeyCode::Enter);
    assert!(h.screen().contains("boot volume 0: whole GB, 1 or more"), "{}", h.screen());
    h.key(KeyCode::Backspace);
    h.chars("8");
    snap!("wizard_1_name", h.screen());
    h.key(KeyCode::Enter);
    h.chars("cir");
    let s = h.screen();
    assert!(s.contains("cirros") && !s.contains("debian"), "{s}");
    snap!("wizard_2_image_search", s);
    h.key(KeyCode::Enter);
    let s = h.screen();
    // cirros needs 1024 MB and 2 GB; the quota leaves 1 vCPU for 2 instances.
    assert!(s.contains("RAM 512 MB < image minimum 1024 MB"), "{s}");
    assert!(s.contains("needs 4 vCPUs, quota leaves 1"), "{s}");
    snap!("wizard_3_flavor", s);
    h.key(KeyCode::Enter);
    assert!(h.screen().contains("does not fit"), "a marked flavor cannot be taken");
    h.app.on_response(Response::Overview(Overview {
        quotas: Quotas { items: vec![("vCPUs".into(), 0, 20)] },
        hypervisors: vec![],
        ..Overview::default()
    }));
    h.key(KeyCode::Down); // m1.small now fits
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("[ ] net"), "{s}");
    h.key(KeyCode::Enter);
    assert!(h.screen().contains("choose at least one network"));
    h.chars(" ");
    snap!("wizard_4_networks", h.screen());
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("[x] default") && s.contains("[ ] web"), "none chosen: the cloud's default: {s}");
    h.key(KeyCode::Down);
    h.chars(" ");
    snap!("wizard_4_security_groups", h.screen());
    h.key(KeyCode::Enter);
    h.key(KeyCode::Down);
    snap!("wizard_5_keypair", h.screen());
    h.key(KeyCode::Enter);
    h.chars("#cloud-config");
    h.key(KeyCode::Enter);
    h.chars("packages: [nginx]");
    snap!("wizard_6_user_data", h.screen());
    h.key(KeyCode::Tab);
    let s = h.screen();
    assert!(s.contains("m1.small") && s.contains("laptop") && s.contains("2 lines"), "{s}");
    snap!("wizard_7_review", s);
    h.key(KeyCode::Enter);
    let reqs = h.drain();
    let [Request::Launch(spec)] = reqs.as_slice() else { panic!("{reqs:?}") };
    assert_eq!((spec.name.as_str(), spec.count), ("app", 2));
    assert_eq!(spec.image_id, id(900));
    assert_eq!(spec.flavor_id, "2");
    assert_eq!(spec.network_ids, vec![id(800)]);
    assert_eq!(spec.key_name.as_deref(), Some("laptop"));
    assert_eq!(spec.security_groups, vec!["web".to_string()]);
    assert_eq!(spec.boot_volume_gb, Some(8));
    assert_eq!(spec.user_data.as_deref(), Some("#cloud-config\npackages: [nginx]"));
    // A refusal from the cloud is shown in words, in place.
    h.app.on_response(Response::Failed {
        request: reqs[0].clone(),
        message: "launch failed: Quota exceeded for instances: Requested 2, but already used 9 of 10 instances (403)"
            .into(),
    });
    let s = h.screen();
    assert!(s.contains("Quota exceeded for instances"), "{s}");
    snap!("wizard_server_error", s);
    // Success: the wizard closes and the new instances are there at once.
    h.key(KeyCode::Enter);
    h.drain();
    h.app.on_response(Response::Launched(vec![
        server(20, "app-1", "BUILD", Some("scheduling"), 0),
        server(21, "app-2", "BUILD", Some("scheduling"), 0),
    ]));
    let s = h.screen();
    assert!(s.contains("app-1") && s.contains("app-2") && s.contains("launched 2 instances"), "{s}");
}

#[test]
fn login_form_masks_the_password_and_explains_errors() {
    let (tx, mut rx) = unbounded_channel();
    let p = Profile {
        name: "form".into(),
        auth_url: "http://cloud/identity".into(),
        username: "alice".into(),
        ..Profile::default()
    };
    let mut app = App::new(tx, Screen::Login(LoginForm::new(&p)), AppConfig::default());
    for c in "s3cret".chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let mut term = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    term.draw(|f| app.draw(f)).expect("draw");
    let s = format!("{}", term.backend());
    assert!(!s.contains("s3cret") && s.contains("••••••"), "{s}");
    assert!(s.contains("Project is required"), "{s}");
    assert!(rx.try_recv().is_err(), "an incomplete form sends nothing");
    snap!("login_form_error", s);
    for c in "demo".chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert!(matches!(rx.try_recv(), Ok(Request::Login(_))));
    app.on_response(Response::NeedLogin { message: "the cloud did not accept these credentials".into() });
    term.draw(|f| app.draw(f)).expect("draw");
    assert!(format!("{}", term.backend()).contains("did not accept"));
}

#[test]
fn session_expiry_asks_again_over_the_same_screen() {
    let mut h = Harness::loaded(120, 30, false);
    h.app.on_response(Response::NeedLogin {
        message: "session expired: the cloud did not accept these credentials".into(),
    });
    let s = h.screen();
    assert!(s.contains("session expired") && s.contains("web-1"), "the screen stays behind the form: {s}");
    snap!("relogin_overlay", s);
}

#[test]
fn cloud_picker() {
    let (tx, _rx) = unbounded_channel();
    let clouds = vec![
        Profile {
            name: "prod".into(),
            auth_url: "https://prod/identity".into(),
            username: "bob".into(),
            project_name: "ops".into(),
            ..Profile::default()
        },
        Profile {
            name: "dev".into(),
            auth_url: "http://dev:5000/v3".into(),
            username: "alice".into(),
            project_name: "demo".into(),
            ..Profile::default()
        },
    ];
    let mut app = App::new(tx, Screen::Picker(Picker::new(clouds)), AppConfig::default());
    let mut term = Terminal::new(TestBackend::new(80, 12)).expect("terminal");
    term.draw(|f| app.draw(f)).expect("draw");
    snap!("cloud_picker", format!("{}", term.backend()));
    // dev has no password: Enter leads to the form for it.
    app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert!(matches!(app.screen, Screen::Login(_)));
}

#[test]
fn project_switch_lists_projects_and_switches() {
    let mut h = Harness::loaded(80, 24, false);
    h.chars("p");
    assert_eq!(h.drain(), vec![Request::Projects]);
    h.app.on_response(Response::Projects(vec![
        meridian_tui::model::Project { id: "p1".into(), name: "demo".into(), domain_id: "default".into() },
        meridian_tui::model::Project { id: "p2".into(), name: "staging".into(), domain_id: "default".into() },
    ]));
    snap!("projects", h.screen());
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    assert_eq!(h.drain(), vec![Request::SwitchProject { id: "p2".into(), name: "staging".into() }]);
}

#[test]
fn a_project_switch_empties_every_table() {
    let mut h = Harness::loaded(100, 24, true);
    for &k in Kind::ALL {
        assert!(h.app.tables.get(k).loaded(), "{k:?} is loaded first");
    }
    h.app.on_response(Response::LoggedIn(SessionInfo {
        cloud: "devstack".into(),
        auth_url: "http://cloud/identity".into(),
        user: "admin".into(),
        project: "staging".into(),
        project_id: "p2".into(),
        admin: true,
        expires_at: None,
        compute_version: Some("2.79".into()),
    }));
    for &k in Kind::ALL {
        assert!(!h.app.tables.get(k).loaded(), "{k:?} still holds the old project's rows");
        h.app.go_to(View::of_kind(k));
        let s = h.screen();
        assert!(s.contains("loading…"), "{k:?}: {s}");
    }
    // The new project's lists were asked for.
    let reqs = h.drain();
    for &k in Kind::ALL {
        assert!(reqs.contains(&Request::List(k)), "{k:?} not reloaded: {reqs:?}");
    }
}

#[test]
fn themes_switch_in_app() {
    let (tx, _rx) = unbounded_channel();
    let (themes, _) = meridian_tui::theme::load_all(std::path::Path::new("/nonexistent"));
    let cfg = AppConfig { themes, ..AppConfig::default() };
    let mut app = App::new(tx, Screen::Main, cfg);
    assert_eq!(app.theme_name(), "dark");
    app.on_key(KeyEvent::new(KeyCode::Char('T'), KeyModifiers::SHIFT));
    assert_eq!(app.theme_name(), "light");
    app.run_command("theme high-contrast");
    assert_eq!(app.theme_name(), "high-contrast");
}

#[test]
fn ten_thousand_rows_draw_only_what_fits() {
    let mut h = Harness::loaded(120, 40, false);
    let many: Vec<Server> = (0..10_000).map(|i| server(i, &format!("vm-{i:05}"), "ACTIVE", None, 1)).collect();
    h.app.on_response(Response::Listed(Listing::Servers(many)));
    h.key(KeyCode::End);
    let s = h.screen();
    assert!(s.contains("vm-09999") && s.contains("[10000]"), "{s}");
}

#[test]
fn wizard_imports_a_public_key_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("id.pub");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0 me@laptop\n").expect("key");
    std::fs::write(dir.path().join("not-a-key"), "hello").expect("file");
    let mut h = Harness::loaded(80, 24, false);
    wizard(&mut h);
    h.chars("k");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter); // first image
    h.key(KeyCode::Enter); // the first flavor that fits is preselected: m1.small
    h.chars(" ");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter); // security groups: the cloud's default
    h.key(KeyCode::Down);
    h.key(KeyCode::Down); // "import a public key file…"
    h.chars(&dir.path().join("not-a-key").display().to_string());
    h.key(KeyCode::Tab);
    h.chars("mykey");
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("is not an OpenSSH public key"), "{s}");
    assert!(h.drain().is_empty());
    h.key(KeyCode::Tab);
    for _ in 0.."not-a-key".len() {
        h.key(KeyCode::Backspace);
    }
    h.chars("id.pub");
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::ImportKeypair {
            name: "mykey".into(),
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0 me@laptop".into()
        }]
    );
    h.app.on_response(Response::KeypairImported("mykey".into()));
    assert_eq!(h.drain(), vec![Request::List(Kind::Keypairs)]);
    // The imported key is the one chosen; the wizard moves on.
    h.key(KeyCode::Enter);
    h.key(KeyCode::Tab);
    let s = h.screen();
    assert!(s.contains("Key pair: mykey"), "{s}");
}

#[test]
fn mouse_selects_rows_opens_them_and_switches_views() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut h = Harness::loaded(80, 24, false);
    h.screen();
    let click = |col, row| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: col,
        row,
        modifiers: KeyModifiers::NONE,
    };
    // Rows start under the tab bar, the border and the header: the third row is `db`.
    h.app.on_mouse(click(5, 5));
    h.app.on_mouse(click(5, 5));
    let s = h.screen();
    assert!(s.contains("Instance db"), "a second click opens the row: {s}");
    h.key(KeyCode::Esc);
    h.app.on_mouse(MouseEvent { kind: MouseEventKind::ScrollDown, column: 5, row: 5, modifiers: KeyModifiers::NONE });
    h.app.on_mouse(click(23, 0)); // "Flavors" in the tab bar
    assert_eq!(h.app.view(), View::Flavors);
}

/// Whether the row showing `text` is drawn struck through (a delete on its way).
fn struck(h: &mut Harness, text: &str) -> bool {
    let s = h.screen();
    let at = s.lines().enumerate().find_map(|(y, l)| l.find(text).map(|b| (l[..b].chars().count() as u16, y as u16)));
    at.is_some_and(|xy| h.term.backend().buffer()[xy].modifier.contains(ratatui::style::Modifier::CROSSED_OUT))
}

#[test]
fn delete_an_image_asks_names_it_strikes_the_row_and_removes_it() {
    let mut h = Harness::loaded(80, 14, false);
    h.app.run_command("images");
    h.drain();
    h.ctrl('d');
    let s = h.screen();
    assert!(s.contains("Delete image cirros?"), "{s}");
    snap!("confirm_delete_image", s);
    h.chars("n");
    assert!(h.drain().is_empty(), "no means no");
    assert!(h.screen().contains("not deleted"));
    h.ctrl('d');
    h.key(KeyCode::Enter);
    let req = Request::Delete { kind: Kind::Images, id: id(900), name: "cirros".into() };
    assert_eq!(h.drain(), vec![req]);
    assert!(struck(&mut h, "cirros"), "pending: struck through");
    assert!(!struck(&mut h, "debian-13"));
    h.app.on_response(Response::Deleted { kind: Kind::Images, id: id(900), name: "cirros".into() });
    let s = h.screen();
    assert!(s.contains("Images [1]") && s.contains("deleted image cirros"), "{s}");
    assert!(s.lines().filter(|l| l.contains("cirros")).count() == 1, "only the status line names it: {s}");
}

#[test]
fn delete_a_key_pair_and_a_refusal_restores_the_row_with_a_retry() {
    let mut h = Harness::loaded(140, 12, false);
    h.app.run_command("keypairs");
    h.drain();
    h.ctrl('d');
    let s = h.screen();
    assert!(s.contains("Delete key pair laptop?"), "{s}");
    snap!("confirm_delete_keypair", s);
    h.chars("y");
    let req = Request::Delete { kind: Kind::Keypairs, id: "laptop".into(), name: "laptop".into() };
    assert_eq!(h.drain(), vec![req.clone()]);
    assert!(struck(&mut h, "laptop"));
    h.ctrl('d');
    assert!(h.screen().contains("laptop is being deleted"), "no second confirm while pending");
    h.app.on_response(Response::Failed {
        request: req.clone(),
        message: "deleting key pair laptop failed: Policy doesn't allow it. (403 — not allowed for this user)".into(),
    });
    let s = h.screen();
    assert!(s.contains("<R>retry") && s.contains("not allowed"), "{s}");
    assert!(!struck(&mut h, "laptop"), "the row is restored");
    snap!("delete_keypair_refused", s);
    h.chars("R");
    assert_eq!(h.drain(), vec![req], "retry sends the same delete");
    assert!(struck(&mut h, "laptop"));
    h.app.on_response(Response::Deleted { kind: Kind::Keypairs, id: "laptop".into(), name: "laptop".into() });
    let s = h.screen();
    assert!(s.contains("Key pairs [0]") && s.contains("deleted key pair laptop") && !s.contains("retry"), "{s}");
}

#[test]
fn delete_flavors_and_networks_send_their_requests_and_show_conflicts() {
    // A member may ask; the cloud's refusal is shown in words.
    let mut h = Harness::loaded(100, 12, false);
    h.app.run_command("flavors");
    h.drain();
    h.ctrl('d');
    assert!(h.screen().contains("Delete flavor m1.tiny?"));
    h.chars("y");
    let req = Request::Delete { kind: Kind::Flavors, id: "1".into(), name: "m1.tiny".into() };
    assert_eq!(h.drain(), vec![req.clone()]);
    h.app.on_response(Response::Failed {
        request: req,
        message: "deleting flavor m1.tiny failed: Policy doesn't allow os_compute_api:os-flavor-manage:delete to be performed. (403 — not allowed for this user)".into(),
    });
    let s = h.screen();
    assert!(s.contains("m1.tiny") && s.contains("deleting flavor m1.tiny failed"), "{s}");

    h.app.run_command("networks");
    h.drain();
    h.ctrl('d');
    assert!(h.screen().contains("Delete network net?"));
    h.chars("y");
    let req = Request::Delete { kind: Kind::Networks, id: id(800), name: "net".into() };
    assert_eq!(h.drain(), vec![req.clone()]);
    h.app.on_response(Response::Failed {
        request: req,
        message:
            "deleting network net failed: There are one or more ports still in use on the network. (409 — still in use)"
                .into(),
    });
    let s = h.screen();
    assert!(s.contains("Networks [2]") && s.contains("<R>retry deleting network net failed"), "{s}");
    assert!(!struck(&mut h, "net "));

    // From an open detail, the detail's resource.
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    h.ctrl('d');
    assert!(h.screen().contains("Delete network private?"));
    h.chars("y");
    assert_eq!(h.drain(), vec![Request::Delete { kind: Kind::Networks, id: id(801), name: "private".into() }]);
}

#[test]
fn delete_where_nothing_can_be_deleted_says_so() {
    let mut h = Harness::loaded(100, 12, true);
    for (cmd, title) in [("overview", "Overview"), ("hypervisors", "Hypervisors"), ("services", "Services")] {
        h.app.run_command(cmd);
        h.drain();
        h.ctrl('d');
        let s = h.screen();
        assert!(s.contains(&format!("nothing to delete in {title}")) && !s.contains("Confirm"), "{s}");
        assert!(h.drain().is_empty());
    }
}

/// Space marks rows; a start/stop/reboot/delete then acts on all of them after one question
/// naming the count; each row shows its progress; failures are listed per row at the end.
#[test]
fn bulk_stop_marks_asks_once_shows_progress_and_lists_failures() {
    let mut h = Harness::loaded(100, 16, false);
    h.key(KeyCode::Char(' '));
    h.key(KeyCode::Char(' '));
    h.key(KeyCode::Char(' '));
    let s = h.screen();
    assert!(s.contains("3 marked"), "{s}");
    snap!("bulk_marked", s);
    h.key(KeyCode::Char('S'));
    assert!(h.drain().is_empty(), "nothing is sent before the answer");
    let s = h.screen();
    assert!(s.contains("Stop 3 instances?"), "{s}");
    snap!("bulk_confirm", s);
    h.key(KeyCode::Char('y'));
    let mut sent = h.drain();
    sent.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        sent,
        [1, 2, 3].map(|n| Request::Action { id: id(n), op: ServerOp::Stop }).to_vec(),
        "one stop per marked row"
    );
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Stop });
    h.app.on_response(Response::Failed {
        request: Request::Action { id: id(3), op: ServerOp::Stop },
        message: "stop failed: Cannot 'stop' instance while it is in vm_state stopped (409)".into(),
    });
    let s = h.screen();
    assert!(s.contains('✓') && s.contains('✗') && s.contains('…'), "{s}");
    snap!("bulk_progress", s);
    h.app.on_response(Response::Accepted { id: id(2), op: ServerOp::Stop });
    let s = h.screen();
    assert!(s.contains("stop: 1 of 3 instances failed") && s.contains("db: stop failed"), "{s}");
    snap!("bulk_failures", s);
    // Any key closes the report; Esc then clears the marks column.
    h.key(KeyCode::Esc);
    h.key(KeyCode::Esc);
    let s = h.screen();
    assert!(!s.contains("│✗") && !s.contains("│✓") && s.contains("│NAME"), "{s}");
}

/// Bulk delete in a non-instance view: one question, one delete per row.
#[test]
fn bulk_delete_of_images_asks_once() {
    let mut h = Harness::loaded(100, 16, false);
    h.app.run_command("images");
    h.drain();
    h.key(KeyCode::Char(' '));
    h.key(KeyCode::Char(' '));
    h.ctrl('d');
    let s = h.screen();
    assert!(s.contains("Delete 2 images?"), "{s}");
    h.key(KeyCode::Char('y'));
    let sent = h.drain();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|r| matches!(r, Request::Delete { kind: Kind::Images, .. })), "{sent:?}");
}

/// An admin's `A`: instances, images, networks and ports from every project with a PROJECT
/// column (names from Keystone); again, and only the project's.
#[test]
fn all_projects_toggle_adds_a_project_column() {
    let mut h = Harness::loaded(140, 14, true);
    h.key(KeyCode::Char('A'));
    let reqs = h.drain();
    assert!(reqs.contains(&Request::AllProjects(true)) && reqs.contains(&Request::ProjectNames), "{reqs:?}");
    assert!(reqs.contains(&Request::List(Kind::Servers)), "{reqs:?}");
    h.app.on_response(Response::ProjectNames(
        [("p1".to_string(), "demo".to_string()), ("p2".to_string(), "staging".to_string())].into(),
    ));
    let mut other = server(5, "other-vm", "ACTIVE", None, 1);
    other.raw["tenant_id"] = json!("p2");
    let mut mine = server(1, "web-1", "ACTIVE", None, 1);
    mine.raw["tenant_id"] = json!("p1");
    h.app.on_response(Response::Listed(Listing::Servers(vec![mine, other])));
    let s = h.screen();
    assert!(s.contains("PROJECT") && s.contains("staging") && s.contains("all projects"), "{s}");
    snap!("all_projects_instances", s);
    h.app.run_command("ports");
    assert_eq!(h.drain(), vec![Request::List(Kind::Ports)]);
    let s = h.screen();
    assert!(s.contains("PROJECT") && s.contains("staging") && s.contains("fa:16:3e:00:00:03"), "{s}");
    snap!("all_projects_ports", s);
    h.key(KeyCode::Char('A'));
    let reqs = h.drain();
    assert!(reqs.contains(&Request::AllProjects(false)) && reqs.contains(&Request::List(Kind::Ports)), "{reqs:?}");
    assert!(!h.screen().contains("PROJECT"));
}

#[test]
fn all_projects_is_for_admins() {
    let mut h = Harness::loaded(100, 14, false);
    h.key(KeyCode::Char('A'));
    assert!(h.drain().is_empty());
    assert!(h.screen().contains("all projects is for administrators"));
}

/// The instance detail's Actions tab: Nova's instance actions with their events, in words.
#[test]
fn instance_action_history_tab() {
    use meridian_tui::views::actions::{ActionEvent, InstanceAction};
    let mut h = Harness::loaded(100, 16, false);
    h.key(KeyCode::Enter);
    for _ in 0..3 {
        h.key(KeyCode::Tab);
    }
    let reqs = h.drain();
    assert_eq!(reqs.last(), Some(&Request::Actions(id(1))), "{reqs:?}");
    let ev = |event: &str, start: &str, finish: Option<&str>, result: Option<&str>| ActionEvent {
        event: event.into(),
        start_time: Some(start.into()),
        finish_time: finish.map(str::to_string),
        result: result.map(str::to_string),
        host: Some("compute-1".into()),
    };
    h.app.on_response(Response::Actions {
        id: id(1),
        actions: vec![
            InstanceAction {
                action: "stop".into(),
                request_id: "req-2222".into(),
                user_id: Some("u1".into()),
                start_time: Some("2026-11-22T02:10:00.000000".into()),
                message: None,
                events: vec![ev("compute_stop_instance", "2026-11-22T02:10:00.100000", None, None)],
            },
            InstanceAction {
                action: "create".into(),
                request_id: "req-1111".into(),
                user_id: Some("u1".into()),
                start_time: Some("2026-11-22T02:00:00.000000".into()),
                message: Some("Error".into()),
                events: vec![
                    ev(
                        "conductor_schedule_and_build_instances",
                        "2026-11-22T02:00:00.010000",
                        Some("2026-11-22T02:00:00.400000"),
                        Some("Success"),
                    ),
                    ev(
                        "compute__do_build_and_run_instance",
                        "2026-11-22T02:00:00.500000",
                        Some("2026-11-22T02:00:05.000000"),
                        Some("Error"),
                    ),
                ],
            },
        ],
    });
    let s = h.screen();
    assert!(s.contains("Actions") && s.contains("build and run") && s.contains("power off"), "{s}");
    assert!(s.contains("4.5 s") && s.contains("running") && s.contains("req-1111"), "{s}");
    snap!("instance_actions", s);
}

/// Subnets and ports are deleted from their views like any resource: asked, then one DELETE.
#[test]
fn delete_a_subnet_and_a_port() {
    let mut h = Harness::loaded(100, 16, false);
    for (cmd, kind, noun, first) in
        [("subnets", Kind::Subnets, "subnet private-v4", id(801)), ("ports", Kind::Ports, "port web-1", id(701))]
    {
        h.app.run_command(cmd);
        h.drain();
        h.ctrl('d');
        let s = h.screen();
        assert!(s.contains(&format!("Delete {noun}?")), "{s}");
        h.key(KeyCode::Char('y'));
        let sent = h.drain();
        assert!(
            matches!(sent.as_slice(), [Request::Delete { kind: k, id, .. }] if *k == kind && *id == first),
            "{sent:?}"
        );
        let call = meridian_tui::worker::delete_call(kind, &first).expect("deletable");
        assert_eq!(call.service, "network");
        assert!(call.path.ends_with(&first));
    }
}

/// `c` in the networks view: a network with its subnet (CIDR, gateway, DHCP, DNS), checked
/// before it is sent; the cloud's refusal shows in the form, which keeps what was typed.
#[test]
fn create_network_with_subnet_form() {
    use meridian_tui::overlays::Create;
    use meridian_tui::overlays::create::{NetworkSpec, SubnetSpec};
    let mut h = Harness::loaded(100, 20, false);
    h.app.run_command("networks");
    h.drain();
    h.key(KeyCode::Char('c'));
    h.chars("backend");
    h.key(KeyCode::Tab);
    h.chars("10.9.0.0/33");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Tab);
    h.key(KeyCode::Tab);
    h.chars("1.1.1.1");
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("Create network") && s.contains("the prefix must be 0–32"), "{s}");
    snap!("create_network_error", s);
    assert!(h.drain().is_empty(), "bad input is not sent");
    h.key(KeyCode::BackTab);
    h.key(KeyCode::BackTab);
    h.key(KeyCode::BackTab);
    h.key(KeyCode::Backspace);
    h.key(KeyCode::Backspace);
    h.chars("24");
    h.key(KeyCode::Tab);
    h.chars("none");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Tab);
    h.key(KeyCode::Enter);
    let want = Request::Create(Create::Network(NetworkSpec {
        name: "backend".into(),
        subnet: Some(SubnetSpec {
            cidr: "10.9.0.0/24".into(),
            ip_version: 4,
            gateway: Some(None),
            dhcp: true,
            dns: vec!["1.1.1.1".into()],
        }),
    }));
    assert_eq!(h.drain(), vec![want.clone()]);
    h.app.on_response(Response::Failed { request: want, message: "creating network backend: overlaps (409)".into() });
    let s = h.screen();
    assert!(s.contains("overlaps (409)") && s.contains("10.9.0.0/24"), "{s}");
    h.app.on_response(Response::Created { kind: Kind::Networks, name: "backend".into() });
    let s = h.screen();
    assert!(!s.contains("Create network") && s.contains("created network backend"), "{s}");
    let reqs = h.drain();
    assert!(reqs.contains(&Request::List(Kind::Networks)) && reqs.contains(&Request::List(Kind::Subnets)), "{reqs:?}");
}

/// `c` in the ports view: a port on a network named (or given by ID), with an optional address.
#[test]
fn create_port_form() {
    use meridian_tui::overlays::Create;
    use meridian_tui::overlays::create::PortSpec;
    let mut h = Harness::loaded(100, 20, false);
    h.app.run_command("ports");
    h.drain();
    h.key(KeyCode::Char('c'));
    let s = h.screen();
    assert!(s.contains("Create port"), "{s}");
    snap!("create_port", s);
    assert_eq!(h.drain(), vec![Request::List(Kind::Networks)], "the network list is refreshed for the form");
    // The refreshed list reaches the open form.
    let mut more = networks();
    let mut extra = more[1].clone();
    extra.id = "n-late".into();
    extra.name = "late".into();
    more.push(extra);
    h.app.on_response(Response::Listed(Listing::Networks(more)));
    assert!(h.screen().contains("networks: net, private, late"));
    h.chars("nowhere");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Tab);
    h.key(KeyCode::Enter);
    assert!(h.screen().contains("no network nowhere here"));
    h.key(KeyCode::BackTab);
    h.key(KeyCode::BackTab);
    for _ in 0.."nowhere".len() {
        h.key(KeyCode::Backspace);
    }
    // The fixture's first network.
    let (net_name, net_id) = {
        let n = networks();
        (n[0].name.clone(), n[0].id.clone())
    };
    h.chars(&net_name);
    h.key(KeyCode::Tab);
    h.chars("vip");
    h.key(KeyCode::Tab);
    h.chars("10.0.0.50");
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::Port(PortSpec {
            network_id: net_id,
            name: "vip".into(),
            fixed_ip: Some("10.0.0.50".into())
        }))]
    );
}

/// Identity administration: users (disable/enable with `e`, delete), projects, and role
/// assignments (revoked by deleting the grant).
#[test]
fn identity_admin_views() {
    use meridian_tui::views::assignments::Assignment;
    use meridian_tui::views::idprojects::IdProject;
    use meridian_tui::views::users::User;
    let mut h = Harness::loaded(120, 14, true);
    h.app.run_command("users");
    assert_eq!(h.drain(), vec![Request::List(Kind::Users)]);
    let users: Vec<User> = [("u1", "alice", true, Some("p1")), ("u2", "bob", false, None)]
        .into_iter()
        .map(|(uid, name, enabled, project)| {
            let raw = json!({"id": uid, "name": name, "domain_id": "default", "enabled": enabled,
                "email": format!("{name}@example.com"), "default_project_id": project});
            let mut u: User = parse(raw.clone());
            u.raw = raw;
            u
        })
        .collect();
    h.app.on_response(Response::Listed(Listing::Users(users)));
    let s = h.screen();
    assert!(s.contains("bob") && s.contains("bob@example.com") && s.contains("disable/enable"), "{s}");
    snap!("view_users", s);
    h.key(KeyCode::Char('e'));
    assert_eq!(
        h.drain(),
        vec![Request::SetEnabled { kind: Kind::Users, id: "u1".into(), name: "alice".into(), enabled: false }]
    );
    h.app.on_response(Response::EnabledSet { kind: Kind::Users, name: "alice".into(), enabled: false });
    assert!(h.screen().contains("disabled user alice"));
    assert_eq!(h.drain(), vec![Request::List(Kind::Users)]);
    let call = meridian_tui::worker::delete_call(Kind::Users, "u2").expect("deletable");
    assert_eq!((call.service, call.version, call.path.as_str()), ("identity", Some("v3"), "/users/u2"));

    h.app.run_command("projects");
    h.drain();
    let raw =
        json!({"id": "p2", "name": "staging", "domain_id": "default", "enabled": true, "description": "pre-prod"});
    let mut p: IdProject = parse(raw.clone());
    p.raw = raw;
    h.app.on_response(Response::Listed(Listing::IdProjects(vec![p])));
    assert!(h.screen().contains("pre-prod"));

    h.app.run_command("roles");
    h.drain();
    h.app.on_response(Response::Listed(Listing::Assignments(Vec::new())));
    let s = h.screen();
    assert!(s.contains("Role assignments"), "{s}");
    let _ = Assignment::default();
}

/// `c` in the users view: a user with a password and, optionally, a role on a project.
#[test]
fn create_user_form() {
    use meridian_tui::overlays::Create;
    let mut h = Harness::loaded(100, 20, true);
    h.app.run_command("users");
    h.drain();
    h.key(KeyCode::Char('c'));
    h.chars("eve");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("Create user") && s.contains("the user needs a password"), "{s}");
    snap!("create_user_error", s);
    h.key(KeyCode::BackTab);
    h.key(KeyCode::BackTab);
    h.chars("s3cret!");
    h.key(KeyCode::Tab);
    h.chars("demo");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Enter);
    assert!(!h.screen().contains("s3cret"), "the password is masked");
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::User {
            name: "eve".into(),
            password: "s3cret!".into(),
            project: Some("demo".into()),
            role: "member".into()
        })]
    );
    // In the role assignments view, `c` grants.
    h.app.on_response(Response::Created { kind: Kind::Users, name: "eve".into() });
    h.app.run_command("roles");
    h.drain();
    h.key(KeyCode::Char('c'));
    h.chars("eve");
    h.key(KeyCode::Tab);
    h.chars("staging");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::Grant { user: "eve".into(), project: "staging".into(), role: "member".into() })]
    );
}

/// `c` in the images view: the upload form (its checks, then the request), the transfers
/// overlay with a progress bar, the status line while it runs closed, how it ended; `D`: the
/// download form with a suggested file.
#[test]
fn image_upload_and_download_forms_and_progress() {
    use meridian_tui::transfer::{DownloadSpec, Phase, Progress, UploadSpec, Way};
    use std::time::Duration;
    let mut h = Harness::loaded(100, 24, false);
    h.app.run_command("images");
    h.drain();
    h.key(KeyCode::Char('c'));
    let s = h.screen();
    assert!(s.contains("Upload image") && s.contains("Disk format"), "{s}");
    snap!("image_upload_form", s);
    h.chars("~/cirros.qcow2");
    for _ in 0..3 {
        h.key(KeyCode::Tab);
    }
    for _ in 0.."private".len() {
        h.key(KeyCode::Backspace);
    }
    h.chars("everyone");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Backspace);
    h.chars("x");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("visibility everyone: one of private, shared, community, public"), "{s}");
    snap!("image_upload_form_error", s);
    assert!(h.drain().is_empty(), "bad input is not sent");
    h.key(KeyCode::BackTab);
    h.key(KeyCode::BackTab);
    for _ in 0.."everyone".len() {
        h.key(KeyCode::Backspace);
    }
    h.chars("public");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Backspace);
    h.chars("1");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    let spec = UploadSpec {
        file: "~/cirros.qcow2".into(),
        name: String::new(),
        disk_format: String::new(),
        visibility: "public".into(),
        min_disk_gb: 1,
        min_ram_mb: 0,
    };
    assert_eq!(h.drain(), vec![Request::Upload { id: 1, spec }]);
    let mut p = Progress {
        id: 1,
        way: Way::Upload,
        name: "cirros".into(),
        file: "/home/op/cirros.qcow2".into(),
        image_id: Some("img-1".into()),
        done: 9 << 20,
        total: Some(20 << 20),
        phase: Phase::Moving,
        elapsed: Duration::from_secs(3),
    };
    h.app.on_response(Response::Transfer(p.clone()));
    let s = h.screen();
    assert!(s.contains("Transfers") && s.contains("45% · 9.0 MiB of 20.0 MiB · 3.0 MiB/s"), "{s}");
    snap!("image_transfers_progress", s);
    // `c` cancels the selected running transfer; Esc leaves it running, shown in the status line.
    h.key(KeyCode::Char('c'));
    assert_eq!(h.drain(), vec![Request::CancelTransfer(1)]);
    h.key(KeyCode::Esc);
    let s = h.screen();
    assert!(s.contains("↑ cirros 45%"), "{s}");
    p.phase = Phase::Cancelled;
    h.app.on_response(Response::Transfer(p.clone()));
    let s = h.screen();
    assert!(s.contains("upload of cirros: cancelled: the image was deleted"), "{s}");
    assert_eq!(h.drain(), vec![Request::List(Kind::Images)], "images are read again");
    p.phase = Phase::Failed("MD5 mismatch".into());
    h.app.on_response(Response::Transfer(p));
    assert!(h.screen().contains("upload of cirros failed: MD5 mismatch"));
    h.drain();

    // `D` on an active image: where to save it, then the request.
    h.key(KeyCode::Char('D'));
    let s = h.screen();
    assert!(s.contains("Download image") && s.contains("image "), "{s}");
    let (id, name) = {
        let i = &images()[0];
        (i.id.clone(), i.name.clone())
    };
    // Replace the suggestion (it depends on the home directory) with a fixed file.
    for _ in 0..200 {
        h.key(KeyCode::Backspace);
    }
    h.chars("/tmp/saved.img");
    snap!("image_download_form", h.screen());
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Download { id: 2, spec: DownloadSpec { image_id: id, name, file: "/tmp/saved.img".into() } }]
    );
}

/// The security group views: groups with rule and port counts, Enter lists a group's rules,
/// `c` creates a group or a rule (checked before sending), `F` on an instance adds/removes its
/// groups; ports show their port security.
#[test]
fn security_groups_rules_and_forms() {
    use meridian_tui::overlays::Create;
    use meridian_tui::overlays::create::RuleSpec;
    let mut h = Harness::loaded(110, 22, false);
    h.app.run_command("secgroups");
    h.drain();
    let s = h.screen();
    assert!(s.contains("http and https from anywhere"), "{s}");
    snap!("view_secgroups", s);
    h.key(KeyCode::Char('c'));
    h.chars("db");
    h.key(KeyCode::Tab);
    h.chars("postgres only");
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::SecGroup { name: "db".into(), description: "postgres only".into() })]
    );
    h.app.on_response(Response::Created { kind: Kind::SecGroups, name: "db".into() });
    let reqs = h.drain();
    assert!(
        reqs.contains(&Request::List(Kind::SecGroups)) && reqs.contains(&Request::List(Kind::SecRules)),
        "{reqs:?}"
    );

    // Enter on web: its rules.
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("8000-8100") && s.contains("type 8 code 0") && !s.contains("group default"), "{s}");
    snap!("view_secrules_of_web", s);
    h.drain();
    h.key(KeyCode::Char('c'));
    let s = h.screen();
    assert!(s.contains("Add a rule") && s.contains("Group: web"), "the filtered group is the default: {s}");
    assert_eq!(h.drain(), vec![Request::List(Kind::SecGroups)]);
    // Ports without a protocol: refused in place.
    h.key(KeyCode::Tab);
    h.key(KeyCode::Tab);
    h.key(KeyCode::Tab);
    for _ in 0..3 {
        h.key(KeyCode::Backspace);
    }
    h.chars("any");
    h.key(KeyCode::Tab);
    h.chars("22");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("ports need a protocol"), "{s}");
    snap!("secrule_form_error", s);
    assert!(h.drain().is_empty());
    h.key(KeyCode::BackTab);
    h.key(KeyCode::BackTab);
    h.key(KeyCode::BackTab);
    for _ in 0..3 {
        h.key(KeyCode::Backspace);
    }
    h.chars("tcp");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Tab);
    h.chars("192.0.2.7");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::SecRule(RuleSpec {
            group_id: "g-web".into(),
            direction: "ingress".into(),
            ethertype: "IPv4".into(),
            protocol: Some("tcp".into()),
            port_range_min: Some(22),
            port_range_max: Some(22),
            remote_ip_prefix: Some("192.0.2.7/32".into()),
            remote_group_id: None,
            description: String::new(),
        }))]
    );

    h.app.on_response(Response::Created { kind: Kind::SecRules, name: String::new() });
    assert!(h.screen().contains("created rule"));

    // `F` on an instance: add web, remove default.
    h.app.run_command("servers");
    h.drain();
    h.key(KeyCode::Char('F'));
    let s = h.screen();
    assert!(s.contains("Security groups of the instance") && s.contains("groups: default, web"), "{s}");
    snap!("server_groups_form", s);
    h.chars("web");
    h.key(KeyCode::Tab);
    h.chars("default");
    h.key(KeyCode::Enter);
    let reqs = h.drain();
    assert!(
        reqs.iter().any(|r| matches!(r, Request::Create(Create::ServerGroups { add, remove, .. })
            if add == &["web".to_string()] && remove == &["default".to_string()])),
        "{reqs:?}"
    );
    h.app.on_response(Response::GroupsChanged {
        server: "web-1".into(),
        added: vec!["web".into()],
        removed: vec!["default".into()],
    });
    assert!(h.screen().contains("security groups of web-1: added web; removed default"));
}

/// The Volumes and Snapshots views and their forms: create (from a snapshot, checked), attach
/// to an instance by name, detach, extend (only larger), snapshot, upload to an image.
#[test]
fn volumes_snapshots_and_their_forms() {
    use meridian_tui::overlays::Create;
    use meridian_tui::overlays::create::{VolumeRef, VolumeSpec};
    let mut h = Harness::loaded(110, 22, false);
    h.app.run_command("volumes");
    h.drain();
    let s = h.screen();
    assert!(s.contains("web-1 on /dev/vdb") && s.contains("in-use"), "{s}");
    snap!("view_volumes", s);
    // Enter: the detail starts from where the volume is attached, by server name and device.
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("Volume data") && s.contains("attached_to") && s.contains("web-1 on /dev/vdb"), "{s}");
    snap!("volume_detail_attached", s);
    h.key(KeyCode::Esc);
    h.drain();
    let data =
        VolumeRef { id: "v-data".into(), name: "data".into(), size_gb: 10, attached: Some((id(1), "web-1".into())) };

    // `a` on an attached volume: said, no form.
    h.key(KeyCode::Char('a'));
    assert!(h.screen().contains("volume data is attached already"));
    // `E`: only larger.
    h.key(KeyCode::Char('E'));
    for _ in 0..3 {
        h.key(KeyCode::Backspace);
    }
    h.chars("8");
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("a volume only grows: give more than 10 GB"), "{s}");
    snap!("volume_extend_error", s);
    h.key(KeyCode::Backspace);
    h.chars("20");
    h.key(KeyCode::Enter);
    assert_eq!(h.drain(), vec![Request::Create(Create::Extend { volume: data.clone(), size_gb: 20 })]);
    h.app.on_response(Response::Did { kind: Kind::Volumes, message: "extending volume data to 20 GB".into() });
    assert!(h.screen().contains("extending volume data to 20 GB"));
    let reqs = h.drain();
    assert!(reqs.contains(&Request::List(Kind::Volumes)) && reqs.contains(&Request::List(Kind::Servers)), "{reqs:?}");

    // `u`: detach from web-1.
    h.key(KeyCode::Char('u'));
    assert!(h.screen().contains("Detach volume") && h.screen().contains("From: web-1"));
    h.key(KeyCode::Enter);
    assert_eq!(h.drain(), vec![Request::Create(Create::Detach { volume: data.clone() })]);
    h.key(KeyCode::Esc);
    // `n`: a snapshot (forced: the volume is in use).
    h.key(KeyCode::Char('n'));
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::VolSnapshot {
            volume: data.clone(),
            name: "data-snap".into(),
            description: String::new()
        })]
    );
    h.key(KeyCode::Esc);

    // The free volume: attach to an instance by name.
    h.key(KeyCode::Down);
    h.key(KeyCode::Char('a'));
    h.chars("db");
    let s = h.screen();
    assert!(s.contains("Attach volume") && s.contains("volume root (2 GB)"), "{s}");
    snap!("volume_attach_form", s);
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::Attach {
            volume: VolumeRef { id: "v-root".into(), name: "root".into(), size_gb: 2, attached: None },
            server_id: id(3),
            server_name: "db".into(),
        })]
    );
    h.key(KeyCode::Esc);
    // `U`: to an image.
    h.key(KeyCode::Char('U'));
    h.key(KeyCode::Tab);
    for _ in 0..3 {
        h.key(KeyCode::Backspace);
    }
    h.chars("qcow3");
    h.key(KeyCode::Enter);
    assert!(h.screen().contains("disk format qcow3: one of"));
    h.key(KeyCode::Backspace);
    h.chars("2");
    h.key(KeyCode::Enter);
    let reqs = h.drain();
    assert!(
        matches!(reqs.as_slice(), [Request::Create(Create::ToImage { image_name, disk_format, .. })]
        if image_name == "root" && disk_format == "qcow2"),
        "{reqs:?}"
    );
    h.key(KeyCode::Esc);

    // Snapshots: `c` makes a volume from the selected one.
    h.app.run_command("snapshots");
    h.drain();
    let s = h.screen();
    assert!(s.contains("data-nightly") && s.contains("before the upgrade"), "{s}");
    snap!("view_vol_snapshots", s);
    h.key(KeyCode::Char('c'));
    h.chars("restored");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Backspace);
    h.chars("10");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Tab);
    h.chars("cirros");
    for _ in 0..4 {
        h.key(KeyCode::Enter);
    }
    let s = h.screen();
    assert!(s.contains("start from one source: an image, a snapshot or a volume"), "{s}");
    snap!("volume_create_error", s);
    for _ in 0..3 {
        h.key(KeyCode::BackTab);
    }
    for _ in 0.."cirros".len() {
        h.key(KeyCode::Backspace);
    }
    for _ in 0..4 {
        h.key(KeyCode::Enter);
    }
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::Volume(VolumeSpec {
            name: "restored".into(),
            size_gb: Some(10),
            volume_type: String::new(),
            image_id: None,
            snapshot_id: Some("s-1".into()),
            source_volid: None,
            description: String::new(),
        }))]
    );
    h.key(KeyCode::Esc);

    // Volumes: `c` with a source volume (by name) and no size clones it at its own size.
    h.app.run_command("volumes");
    h.drain();
    h.key(KeyCode::Char('c'));
    // The form's sources are refreshed as it opens.
    assert_eq!(h.drain(), vec![Request::List(Kind::Images), Request::List(Kind::Snapshots)]);
    h.chars("copy");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Backspace);
    for _ in 0..4 {
        h.key(KeyCode::Tab);
    }
    h.chars("root");
    let s = h.screen();
    assert!(s.contains("From volume: root"), "{s}");
    snap!("volume_clone_form", s);
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::Volume(VolumeSpec {
            name: "copy".into(),
            size_gb: None,
            volume_type: String::new(),
            image_id: None,
            snapshot_id: None,
            source_volid: Some("v-root".into()),
            description: String::new(),
        }))]
    );
    h.key(KeyCode::Esc);
    // Without a source a size is needed.
    h.key(KeyCode::Char('c'));
    h.key(KeyCode::Tab);
    h.key(KeyCode::Backspace);
    for _ in 0..6 {
        h.key(KeyCode::Enter);
    }
    assert!(h.screen().contains("size : whole GB, 1 or more"), "{}", h.screen());
}

/// `P` pauses the selected instance (its row shows `pausing` at once) and unpauses a paused
/// one; `Z` suspends and resumes the same way; both colour and name the states Nova reports.
#[test]
fn pause_and_suspend_toggle_with_the_instance_state() {
    let mut h = Harness::loaded(100, 12, false);
    h.chars("P"); // web-1, ACTIVE
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Pause }]);
    let s = h.screen();
    assert!(s.contains("pausing"), "{s}");
    snap!("pause_expected", s);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Pause });
    h.app.on_response(Response::ServerUpdate(Box::new(server(1, "web-1", "PAUSED", None, 3))));
    let s = h.screen();
    assert!(s.contains("PAUSED") && s.contains("Paused") && !s.contains("pausing"), "{s}");
    snap!("paused", s);
    h.chars("P");
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Unpause }]);
    h.app.on_response(Response::ServerUpdate(Box::new(server(1, "web-1", "ACTIVE", None, 1))));

    h.chars("Z");
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Suspend }]);
    assert!(h.screen().contains("suspending"));
    h.app.on_response(Response::ServerUpdate(Box::new(server(1, "web-1", "SUSPENDED", None, 4))));
    let s = h.screen();
    assert!(s.contains("SUSPENDED") && s.contains("Shutdown"), "{s}");
    snap!("suspended", s);
    h.chars("Z");
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Resume }]);
}

/// `L` asks why, then locks with that reason; on a locked instance it unlocks; the detail
/// shows `locked`, `locked_reason` and the tags.
#[test]
fn lock_asks_a_reason_and_the_detail_shows_lock_and_tags() {
    let mut h = Harness::loaded(100, 30, false);
    h.chars("L");
    assert!(h.drain().is_empty(), "nothing is sent before the reason");
    h.chars("kernel upgrade");
    let s = h.screen();
    assert!(s.contains("lock web-1") && s.contains("kernel upgrade"), "{s}");
    snap!("lock_reason", s);
    h.key(KeyCode::Enter);
    assert_eq!(h.drain(), vec![Request::Lock { id: id(1), reason: "kernel upgrade".into() }]);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Lock });

    let mut raw = server(1, "web-1", "ACTIVE", None, 1).raw;
    raw["locked"] = json!(true);
    raw["locked_reason"] = json!("kernel upgrade");
    raw["tags"] = json!(["web", "prod"]);
    h.app.on_response(Response::ServerUpdate(Box::new(meridian_tui::model::parse_server(&raw).expect("server"))));
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("locked_reason") && s.contains("kernel upgrade") && s.contains("prod"), "{s}");
    snap!("detail_locked_with_tags", s);
    h.chars("L"); // from the detail: a locked instance unlocks at once
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Unlock }]);
}

/// Marked rows: `P` pauses them all after one question (unpauses when all are paused).
#[test]
fn bulk_pause_asks_once() {
    let mut h = Harness::loaded(100, 16, false);
    h.key(KeyCode::Char(' '));
    h.key(KeyCode::Char(' '));
    h.chars("P");
    assert!(h.drain().is_empty(), "nothing is sent before the answer");
    let s = h.screen();
    assert!(s.contains("Pause 2 instances?"), "{s}");
    snap!("bulk_pause_confirm", s);
    h.key(KeyCode::Char('y'));
    let mut sent = h.drain();
    sent.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(sent, [1, 2].map(|n| Request::Action { id: id(n), op: ServerOp::Pause }).to_vec());
}

/// `n` on an instance asks the snapshot's name, prefilled `<server>-snapshot-<date>`, then
/// sends createImage and asks for the images list (where the new image shows); on marked rows
/// each instance gets `<name>-<suffix>`.
#[test]
fn snapshot_dialog_names_the_image_and_marked_rows_snapshot_each() {
    let mut h = Harness::loaded(100, 16, false);
    h.chars("n");
    assert!(h.drain().is_empty(), "nothing is sent before the name");
    let s = h.screen();
    assert!(s.contains("snapshot web-1") && s.contains("web-1-snapshot-20261122-0300"), "{s}");
    snap!("server_snapshot_dialog", s);
    h.chars("-pre-upgrade");
    h.key(KeyCode::Enter);
    let sent = h.drain();
    assert_eq!(
        sent,
        vec![
            Request::CreateImage { id: id(1), name: "web-1-snapshot-20261122-0300-pre-upgrade".into() },
            Request::List(meridian_tui::worker::Kind::Images),
        ]
    );
    // (The TASK column shows the task's first characters.)
    assert!(h.screen().contains("image_snapsh"), "the row shows the task at once: {}", h.screen());
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Snapshot });

    h.key(KeyCode::Char(' '));
    h.key(KeyCode::Char(' '));
    h.chars("n");
    let s = h.screen();
    assert!(s.contains("snapshot 2 instances") && s.contains("snapshot-20261122-0300"), "{s}");
    h.key(KeyCode::Enter);
    let mut sent = h.drain();
    sent.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        sent,
        vec![
            Request::CreateImage { id: id(1), name: "web-1-snapshot-20261122-0300".into() },
            Request::CreateImage { id: id(2), name: "web-2-snapshot-20261122-0300".into() },
            Request::List(meridian_tui::worker::Kind::Images),
        ]
    );
}

/// `z` shelves the selected instance and unshelves a shelved or offloaded one; the shelved
/// states are named and coloured like the other resting states.
#[test]
fn shelve_toggles_with_the_instance_state() {
    let mut h = Harness::loaded(100, 12, false);
    h.chars("z");
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Shelve }]);
    assert!(h.screen().contains("shelving"), "{}", h.screen());
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Shelve });
    h.app.on_response(Response::ServerUpdate(Box::new(server(1, "web-1", "SHELVED_OFFLOADED", None, 0))));
    let s = h.screen();
    // (The STATUS column shows the status's first characters.)
    assert!(s.contains("SHELVED_O") && !s.contains("shelving"), "{s}");
    snap!("shelved_offloaded", s);
    h.chars("z");
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Unshelve }]);
    assert!(h.screen().contains("unshelving"), "{}", h.screen());
    h.app.on_response(Response::ServerUpdate(Box::new(server(1, "web-1", "SHELVED", None, 4))));
    h.chars("z");
    assert_eq!(h.drain(), vec![Request::Action { id: id(1), op: ServerOp::Unshelve }]);
}

#[test]
fn server_groups_view_form_and_members() {
    use meridian_tui::overlays::Create;
    let mut h = Harness::loaded(100, 16, false);
    h.app.run_command("servergroups");
    assert_eq!(h.drain(), vec![Request::List(Kind::ServerGroups)]);
    let s = h.screen();
    assert!(s.contains("anti-affinity") && s.contains("max_server_per_host=2"), "{s}");
    snap!("view_servergroups", s);
    // Enter: the members by name.
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("web-1 ([uuid])") || s.contains("web-1 ("), "{s}");
    snap!("servergroup_members", s);
    h.key(KeyCode::Esc);
    // c: the form at 2.79 has the per-host rule; a rule on affinity is refused in place.
    h.key(KeyCode::Char('c'));
    h.chars("db");
    h.key(KeyCode::Tab);
    for _ in 0.."anti-affinity".len() {
        h.key(KeyCode::Backspace);
    }
    h.chars("affinity");
    h.key(KeyCode::Tab);
    h.chars("2");
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("max per host is anti-affinity's rule only"), "{s}");
    snap!("servergroup_form_error", s);
    assert!(h.drain().is_empty());
    h.key(KeyCode::BackTab);
    for _ in 0.."affinity".len() {
        h.key(KeyCode::Backspace);
    }
    h.chars("anti-affinity");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::ServerGroup {
            name: "db".into(),
            policy: "anti-affinity".into(),
            max_per_host: Some(2)
        })]
    );
}

#[test]
fn the_wizard_places_instances_in_a_server_group() {
    let mut h = Harness::loaded(80, 30, false);
    wizard(&mut h);
    h.chars("web");
    for _ in 0..4 {
        h.key(KeyCode::Enter);
    }
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    h.chars(" ");
    h.key(KeyCode::Enter);
    // The Security step: → picks the first server group.
    h.key(KeyCode::Right);
    let s = h.screen();
    assert!(s.contains("Server group ←→: spread (anti-affinity)"), "{s}");
    for _ in 0..3 {
        h.key(KeyCode::Tab);
    }
    let s = h.screen();
    assert!(s.contains("Srv group: spread (anti-affinity)"), "{s}");
    snap!("wizard_review_server_group", s);
    h.key(KeyCode::Enter);
    let reqs = h.drain();
    let spec = reqs
        .iter()
        .find_map(|r| match r {
            Request::Launch(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a launch");
    assert_eq!(spec.server_group.as_deref(), Some("sg-1"));
}

#[test]
fn aggregates_view_and_hosts_form() {
    use meridian_tui::overlays::Create;
    let mut h = Harness::loaded(100, 16, true);
    h.app.run_command("aggregates");
    h.drain();
    let s = h.screen();
    assert!(s.contains("az-fast") && s.contains("compute-1") && s.contains("ssd=true"), "{s}");
    snap!("view_aggregates", s);
    h.key(KeyCode::Char('c'));
    h.chars("gpu");
    h.key(KeyCode::Tab);
    h.chars("az-gpu");
    h.key(KeyCode::Enter);
    assert_eq!(h.drain(), vec![Request::Create(Create::Aggregate { name: "gpu".into(), zone: Some("az-gpu".into()) })]);
    h.key(KeyCode::Esc);
    // a: hosts and zone; an unknown host is refused in place.
    h.key(KeyCode::Char('a'));
    assert_eq!(h.drain(), vec![Request::List(Kind::Hypervisors)]);
    h.chars("compute-9");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("no host compute-9 here"), "{s}");
    snap!("aggregate_hosts_form_error", s);
    h.key(KeyCode::Up);
    h.key(KeyCode::Up);
    for _ in 0..9 {
        h.key(KeyCode::Backspace);
    }
    h.chars("compute-2");
    h.key(KeyCode::Tab);
    h.chars("compute-1");
    h.key(KeyCode::Tab);
    h.chars("b");
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::AggregateHosts {
            id: "1".into(),
            name: "fast".into(),
            add: vec!["compute-2".into()],
            remove: vec!["compute-1".into()],
            zone: Some("az-fastb".into()),
        })]
    );
}

/// `m` in `:aggregates`: the pairs listed, set/change and remove sent as one `set_metadata`
/// request; a slip is said in the dialog before sending, and the cloud's refusal after.
#[test]
fn aggregate_metadata_editor() {
    use meridian_tui::overlays::Create;
    let mut h = Harness::loaded(100, 20, true);
    h.app.run_command("aggregates");
    h.drain();
    h.key(KeyCode::Char('m'));
    let s = h.screen();
    assert!(s.contains("Metadata of the aggregate") && s.contains("fast has:"), "{s}");
    assert!(s.contains("  availability_zone=az-fast") && s.contains("  ssd=true"), "one pair a line: {s}");
    snap!("aggregate_metadata_form", s);
    // A key the aggregate does not have: said, nothing sent.
    h.chars("ssd=false, gpu=nvidia");
    h.key(KeyCode::Tab);
    h.chars("nvme");
    h.key(KeyCode::Enter);
    assert!(h.drain().is_empty());
    assert!(h.screen().contains("fast has no key nvme"));
    for _ in 0..4 {
        h.key(KeyCode::Backspace);
    }
    h.chars("ssd");
    h.key(KeyCode::Enter);
    assert!(h.screen().contains("ssd is both set and removed"));
    for _ in 0..3 {
        h.key(KeyCode::Backspace);
    }
    h.chars("availability_zone");
    h.key(KeyCode::Enter);
    let sent = Create::AggregateMeta {
        id: "1".into(),
        name: "fast".into(),
        set: vec![("ssd".into(), "false".into()), ("gpu".into(), "nvidia".into())],
        unset: vec!["availability_zone".into()],
    };
    let sent = Request::Create(sent);
    assert_eq!(h.drain(), vec![sent.clone()]);
    // The cloud refuses: its sentence in the dialog, which stays open to change and send again.
    h.app.on_response(Response::Failed {
        request: sent,
        message:
            "Cannot update metadata of aggregate 1: Reason: One or more hosts contain instances in this zone. (409)"
                .into(),
    });
    let s = h.screen();
    assert!(s.contains("One or more hosts") && s.contains("contain instances in this zone. (409)"), "{s}");
    assert!(s.contains("Metadata of the aggregate"), "{s}");
    snap!("aggregate_metadata_refused", s);
    // Accepted: the form closes, the list is read again, the status line says what changed.
    h.app.on_response(Response::Did { kind: Kind::Aggregates, message: "aggregate fast: gpu=nvidia".into() });
    let s = h.screen();
    assert!(!s.contains("Metadata of the aggregate") && s.contains("aggregate fast: gpu=nvidia"), "{s}");
    assert_eq!(h.drain(), vec![Request::List(Kind::Aggregates)]);
    // An aggregate with no metadata says so.
    h.key(KeyCode::Down);
    h.key(KeyCode::Char('m'));
    assert!(h.screen().contains("no metadata"));
}

#[test]
fn overview_shows_this_months_usage() {
    use meridian_tui::views::usage::{Usage, UsageReport};
    let mut h = Harness::loaded(90, 24, true);
    h.app.run_command("overview");
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("time");
    let usage = |count, f: f64| Usage {
        start,
        end: now(),
        count,
        vcpu_hours: 2.0 * f,
        ram_gb_hours: 0.5 * f,
        disk_gb_hours: f,
    };
    h.app.on_response(Response::Overview(Overview {
        quotas: quotas(),
        hypervisors: vec![],
        usage: UsageReport { project: Some(Ok(usage(3, 10.0))), all_projects: Some(usage(2, 300.0)) },
    }));
    let s = h.screen();
    assert!(s.contains("3 servers · 20.0 vCPU·h · 5.0 RAM GB·h · 10.0 disk GB·h"), "{s}");
    assert!(s.contains("2 projects · 600 vCPU·h"), "{s}");
    snap!("overview_usage", s);
    // A cloud without the usage API: no section at all.
    h.app.on_response(Response::Overview(Overview { quotas: quotas(), ..Overview::default() }));
    let s = h.screen();
    assert!(!s.contains("Usage"), "{s}");
}

#[test]
fn instance_interfaces_diagnostics_and_ports() {
    use meridian_tui::overlays::Create;
    use meridian_tui::views::interfaces::{FixedIpRow, Interface};
    let mut h = Harness::loaded(110, 24, true);
    h.key(KeyCode::Enter);
    for _ in 0..4 {
        h.key(KeyCode::Tab);
    }
    assert_eq!(h.drain().last(), Some(&Request::Interfaces(id(1))));
    let iface = Interface {
        port_id: id(701),
        net_id: id(800),
        mac_addr: "fa:16:3e:00:00:01".into(),
        port_state: "ACTIVE".into(),
        fixed_ips: vec![FixedIpRow { ip_address: "10.0.0.1".into(), subnet_id: "s1".into() }],
    };
    h.app.on_response(Response::Interfaces { id: id(1), interfaces: vec![iface] });
    // m: the diagnostics, once (not polled).
    h.key(KeyCode::Char('m'));
    assert_eq!(h.drain(), vec![Request::Diagnostics(id(1))]);
    h.app.on_response(Response::Diagnostics {
        id: id(1),
        result: Ok(json!({"state": "running", "driver": "libvirt", "uptime": 46,
            "memory_details": {"maximum": 512, "used": 0}, "cpu_details": [{"id": 0, "time": 17000000, "utilisation": null}],
            "nic_details": [{"mac_address": "fa:16:3e:00:00:01", "rx_octets": 100, "rx_packets": 2, "tx_octets": 50,
                "tx_packets": 1, "rx_drop": 0, "tx_drop": 0, "rx_errors": 0, "tx_errors": 0}],
            "disk_details": [{"read_bytes": 4096, "read_requests": 1, "write_bytes": 0, "write_requests": 0, "errors_count": 0}]})),
    });
    let s = h.screen();
    assert!(s.contains("net") && s.contains("10.0.0.1") && s.contains("ACTIVE"), "{s}");
    assert!(s.contains("running · driver libvirt · uptime 46 s"), "{s}");
    assert!(h.drain().is_empty(), "diagnostics are not polled");
    snap!("instance_interfaces_diagnostics", s);
    // I: detach, picked among the instance's interfaces by IP.
    h.key(KeyCode::Char('I'));
    h.drain();
    let s = h.screen();
    assert!(s.contains("Detach a port") && s.contains("web-1's ports: 10.0.0.1"), "{s}");
    snap!("remove_port_form", s);
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::RemovePort { server_id: id(1), server_name: "web-1".into(), port_id: id(701) })]
    );
    h.app.on_response(Response::Did { kind: Kind::Ports, message: "detaching".into() });
    let reqs = h.drain();
    assert!(reqs.contains(&Request::Interfaces(id(1))) && reqs.contains(&Request::List(Kind::Servers)), "{reqs:?}");
    // i: attach, a new port on a network by name.
    h.key(KeyCode::Char('i'));
    h.drain();
    let s = h.screen();
    assert!(s.contains("Attach a port") && s.contains("networks: net, private"), "{s}");
    snap!("add_port_form", s);
    h.chars("private");
    h.key(KeyCode::Tab);
    h.key(KeyCode::Enter);
    assert_eq!(
        h.drain(),
        vec![Request::Create(Create::AddPort {
            server_id: id(1),
            server_name: "web-1".into(),
            network_id: Some(id(801)),
            port_id: None
        })]
    );
}

/// Every Nova status the list can show, with a task on the longest one.
fn every_status() -> Vec<Server> {
    [
        ("VERIFY_RESIZE", None),
        ("REVERT_RESIZE", Some("resize_reverting")),
        ("SHELVED_OFFLOADED", Some("unshelving")),
        ("SOFT_DELETED", None),
        ("PASSWORD", None),
        ("HARD_REBOOT", Some("reboot_started")),
        ("MIGRATING", Some("migrating")),
        ("SUSPENDED", None),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (status, task))| server(i as u32 + 1, &format!("vm-{}", i + 1), status, task, 1))
    .collect()
}

/// The STATUS column at 80 columns: short forms that fit beside TASK (admins lose IMAGE and
/// FLAVOR first), the full status in the hint line; at 120 every status in full.
#[test]
fn every_status_is_readable_at_80_and_120_columns() {
    for (w, admin) in [(80, false), (80, true), (120, false), (120, true)] {
        let mut h = Harness::loaded(w, 14, admin);
        h.app.on_response(Response::Listed(Listing::Servers(every_status())));
        let s = h.screen();
        let header = s.lines().find(|l| l.contains("NAME")).expect("header");
        assert!(header.contains("STATUS") && header.contains("TASK") && header.contains("POWER"), "{s}");
        let row = |name: &str| s.lines().find(|l| l.contains(&format!("{name} "))).expect("row").to_string();
        let wide = w == 120;
        for (name, full, short) in [
            ("vm-1", "VERIFY_RESIZE", "VERIFY"),
            ("vm-2", "REVERT_RESIZE", "REVERT"),
            ("vm-3", "SHELVED_OFFLOADED", "SHELVED_OFF"),
            ("vm-4", "SOFT_DELETED", "SOFT_DEL"),
            ("vm-5", "PASSWORD", "PASSWORD"),
            ("vm-6", "HARD_REBOOT", "HARD_REBOOT"),
        ] {
            let want = if wide { full } else { short };
            assert!(row(name).contains(&format!(" {want} ")), "{w} admin={admin}: {name} shows {want}\n{s}");
        }
        // TASK keeps its 12 cells: the task under it is whole.
        assert!(row("vm-7").contains(" migrating "), "{s}");
        assert!(row("vm-3").contains(" unshelving "), "{s}");
        if admin {
            assert!(header.contains("HOST"), "{s}");
        }
        // The selected row shown short names its full status in the hint line.
        h.key(KeyCode::Down);
        h.key(KeyCode::Down);
        let s = h.screen();
        let hint = s.lines().rev().nth(1).expect("hint line");
        assert!(hint.starts_with("SHELVED_OFFLOADED "), "{hint}");
        snap!(format!("every_status_{w}_{}", if admin { "admin" } else { "member" }), s);
    }
}
