//! The agent's port-filter feed with the whole agent (`meridian_agent::start`) against the fake
//! server, applying with the real `nft` inside a network namespace the test creates (the
//! machine's own ruleset is never touched).

use std::time::{Duration, Instant};

use clap::Parser;
use meridian_agent::config::Args;
use meridian_common::agent::{HostFilters, PortFilter};

use crate::fixtures::{TOKEN, URI, start_server};

/// A network namespace, deleted on drop (with whatever nft tables are in it).
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("mfwit{}{tag}", std::process::id());
        let _ = std::process::Command::new("ip").args(["netns", "del", &name]).output();
        let ok = std::process::Command::new("ip").args(["netns", "add", &name]).status().expect("ip").success();
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    /// `nft list table bridge meridian` inside, or "" when there is none.
    fn bridge_table(&self) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "table", "bridge", "meridian"])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn delete_tables(&self) {
        for family in ["bridge", "inet"] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "exec", &self.0, "nft", "delete", "table", family, "meridian"])
                .output();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn port(n: u8) -> PortFilter {
    PortFilter {
        port_id: format!("{n:02x}feed00-0000-4000-8000-0000000000{n:02x}"),
        instance_id: format!("i{n}"),
        network_id: "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9".into(),
        mac_address: format!("fa:16:3e:00:01:{n:02x}"),
        fixed_ips: vec![format!("10.79.0.{n}")],
        allowed_address_pairs: vec![],
        port_security_enabled: true,
        rules: vec![],
    }
}

fn start(
    url: &str,
    dir: &std::path::Path,
    ns: &str,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let dir = dir.to_string_lossy().to_string();
    let args = Args::try_parse_from([
        "meridian-agent",
        "--server",
        url,
        "--host",
        "compute-fw",
        "--token",
        TOKEN,
        "--libvirt-uri",
        URI,
        "--state-dir",
        &dir,
        "--poll-wait-secs",
        "1",
        "--firewall",
        "nftables",
        "--firewall-netns",
        ns,
    ])
    .expect("flags");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (
        tx,
        tokio::spawn(meridian_agent::start(args, async {
            let _ = rx.await;
        })),
    )
}

async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_filters_are_in_force_before_ready_follow_the_feed_and_survive_a_restart() {
    let ns = Netns::new("feed");
    let (url, s) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (port(1), port(2));
    let (tap_a, tap_b) =
        (meridian_agent::firewall::tap_name(&a.port_id), meridian_agent::firewall::tap_name(&b.port_id));
    *s.filters.lock().expect("lock") = Some(HostFilters { generation: 5, ports: vec![a.clone()] });

    let (stop, running) = start(&url, dir.path(), &ns.0);
    eventually(Duration::from_secs(15), "a heartbeat", || !s.heartbeat_at.lock().expect("lock").is_empty()).await;
    // The first heartbeat (the agent is ready) comes after the filters were fetched, and they
    // are in force by then.
    let first_beat = s.heartbeat_at.lock().expect("lock")[0];
    let first_served = s.filters_served.lock().expect("lock").first().copied().expect("filters fetched");
    assert!(first_served.0 < first_beat && first_served.1 == 5);
    assert!(ns.bridge_table().contains(&format!("jump spoof_{tap_a}")), "{}", ns.bridge_table());

    // A change (port a's instance deleted, b's placed) is in force within a second.
    *s.filters.lock().expect("lock") = Some(HostFilters { generation: 6, ports: vec![b.clone()] });
    let changed = Instant::now();
    eventually(Duration::from_secs(1), "generation 6 in force", || {
        let t = ns.bridge_table();
        t.contains(&format!("jump spoof_{tap_b}")) && !t.contains(&tap_a)
    })
    .await;
    eprintln!("feed change → enforced: {:?}", changed.elapsed());
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("agent stops").expect("task").expect("result");
    assert!(dir.path().join("port-filters.json").exists());

    // The host reboots (tables gone) and comes back while the server has no feed (404): the
    // agent applies what it last applied, says the feed is missing and is still ready.
    ns.delete_tables();
    assert_eq!(ns.bridge_table(), "");
    *s.filters.lock().expect("lock") = None;
    let beats = s.heartbeat_at.lock().expect("lock").len();
    let (stop, running) = start(&url, dir.path(), &ns.0);
    eventually(Duration::from_secs(15), "a heartbeat after the restart", || {
        s.heartbeat_at.lock().expect("lock").len() > beats
    })
    .await;
    assert!(ns.bridge_table().contains(&format!("jump spoof_{tap_b}")), "restored at start");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("agent stops").expect("task").expect("result");
}

/// As Nova waits for `network-vif-plugged`: a build's guest starts (its tap comes up) only
/// once the filters in force name its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_starts_its_guest_only_once_its_port_filter_is_in_force() {
    use meridian_agent::hypervisor::Hypervisor;
    use meridian_common::agent::{Action, WorkEvent, WorkItem};

    use crate::fixtures::{Cleanup, build_spec, libvirt, mac, nic, raw_image};

    let ns = Netns::new("wait");
    let (url, s) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = raw_image(9);
    s.add_image("img-fw", data.clone());
    let id = uuid::Uuid::new_v4();
    let net_id = uuid::Uuid::new_v4().to_string();
    let hv = libvirt();
    let _cleanup = Cleanup { hv: hv.clone(), instances: vec![id], networks: vec![net_id.clone()] };
    let the_nic = nic(&net_id, &mac(), "10.79.1.5");
    *s.filters.lock().expect("lock") = Some(HostFilters { generation: 1, ports: vec![] });
    let (stop, running) = start(&url, dir.path(), &ns.0);
    s.offer(WorkItem {
        id: "w-fw".into(),
        instance_id: id.to_string(),
        attempt: 1,
        action: Action::Build(Box::new(build_spec("img-fw", &data, vec![the_nic.clone()]))),
    });
    let spawning = || {
        s.events_of("w-fw").iter().any(|e| matches!(e, WorkEvent::Progress { task_state } if task_state == "spawning"))
    };
    eventually(Duration::from_secs(15), "the build reaches spawning", spawning).await;
    // Held there: no outcome, no domain, while the feed does not name the port.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(s.events_of("w-fw").iter().all(|e| matches!(e, WorkEvent::Progress { .. })), "{:?}", s.events_of("w-fw"));
    let domain = meridian_agent::xml::Naming::default().domain(&id);
    assert!(hv.state(&domain).expect("state").is_none(), "the domain was defined before its port filter");

    let mut p = port(5);
    p.port_id = the_nic.port_id.clone();
    p.network_id = net_id.clone();
    p.mac_address = the_nic.mac_address.clone();
    *s.filters.lock().expect("lock") = Some(HostFilters { generation: 2, ports: vec![p] });
    eventually(Duration::from_secs(10), "the build done", || {
        s.events_of("w-fw").iter().any(|e| matches!(e, WorkEvent::Done { .. }))
    })
    .await;
    assert!(ns.bridge_table().contains(&meridian_agent::firewall::tap_name(&the_nic.port_id)));
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("agent stops").expect("task").expect("result");
}
