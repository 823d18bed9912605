//! Benchmark of the agents' port-filter feed (figures, not a test): the server-side cost of a
//! security group rule change when 500 ports on one host share the group, i.e. the time from
//! the rule's commit to the affected host's `HostFilters` being built, and the statements that
//! takes. The group admits its own members (as Neutron's `default` group does), so every port
//! carries a remote-group rule resolved to all 500 members' addresses; each change adds a
//! TCP rule from a prefix.
//!
//! In-process through the server's library, on a fresh SQLite file (or `BENCH_DATABASE_URL`,
//! e.g. a PostgreSQL database). Run: `cargo run -p meridian-e2e --bin bench-port-filters`
//! (`BENCH_PORTS`, `BENCH_CHANGES` change the defaults 500 / 20).

use std::time::Instant;

use meridian_server::compute::port_filters;
use meridian_server::store::Store;
use meridian_server::store::hosts::HostInventory;
use meridian_server::store::instances::Instance;
use meridian_server::store::network::{Network, NewPort, Subnet};
use meridian_server::store::security_groups::NewRule;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn instance(id: &str, project: &str, host: &str) -> Instance {
    let ts = meridian_server::store::now();
    Instance {
        id: id.into(),
        name: id.into(),
        hostname: id.into(),
        description: None,
        project_id: project.into(),
        user_id: "bench-user".into(),
        flavor_id: "1".into(),
        flavor: r#"{"id":"1","name":"m1.nano","vcpus":1,"ram":64,"disk":1,"ephemeral":0,"swap":0}"#.into(),
        image_id: "bench-image".into(),
        key_name: None,
        key_data: None,
        user_data: None,
        metadata: "{}".into(),
        tags: "[]".into(),
        availability_zone: None,
        config_drive: String::new(),
        reservation_id: format!("r-{id}"),
        launch_index: 0,
        host_id: Some(host.into()),
        alternates: "[]".into(),
        tried_hosts: "[]".into(),
        claimed: 0,
        requested_networks: "[]".into(),
        owned_ports: "[]".into(),
        vm_state: "active".into(),
        task_state: None,
        power_state: 1,
        fault: None,
        locked: 0,
        build_deadline: None,
        created_at: ts.clone(),
        updated_at: ts,
        launched_at: None,
        terminated_at: None,
        deleted: 0,
        access_ip_v4: None,
        access_ip_v6: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n = env("BENCH_PORTS", 500);
    let changes = env("BENCH_CHANGES", 20);
    let dir = tempfile::tempdir()?;
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.sqlite").display()));
    let store = Store::open(&url).await?;
    let project = "bench-project";
    let inv = HostInventory { vcpus: 1024, memory_mb: 1 << 20, disk_gb: 100_000, ..Default::default() };
    let host = store.register_host("bench-host", &inv).await?;
    let net = store.create_networks(vec![Network::new(project)]).await?.remove(0);
    store.create_subnets(vec![Subnet::new(project, &net.id, &"10.60.0.0/20".parse()?)]).await?;
    let group = store.create_security_group(project, "members", "", true).await?;
    store
        .create_security_group_rules(vec![NewRule {
            security_group_id: group.id.clone(),
            project_id: project.into(),
            direction: "ingress".into(),
            ethertype: "IPv4".into(),
            remote_group_id: Some(group.id.clone()),
            ..Default::default()
        }])
        .await?;
    let seeding = Instant::now();
    for k in 0..n {
        let id = format!("bench-vm-{k:04}");
        store.create_instance(&instance(&id, project, &host), None).await?;
        let mut p = NewPort::new(project, &net.id);
        p.device_id = id;
        p.device_owner = "compute:nova".into();
        p.host_id = "bench-host".into();
        p.security_groups = Some(vec![group.id.clone()]);
        store.create_port(p).await?;
    }
    eprintln!("seeded {n} instances with a port each in one group in {:.1} s", seeding.elapsed().as_secs_f64());

    let mut times = Vec::with_capacity(changes);
    let mut statements = 0;
    let mut size = 0;
    for k in 0..changes {
        let port = u16::try_from(1000 + k)?;
        let start = Instant::now();
        let before = store.statements();
        store
            .create_security_group_rules(vec![NewRule {
                security_group_id: group.id.clone(),
                project_id: project.into(),
                direction: "ingress".into(),
                ethertype: "IPv4".into(),
                protocol: Some("tcp".into()),
                port_range_min: Some(i64::from(port)),
                port_range_max: Some(i64::from(port)),
                remote_ip_prefix: Some("192.0.2.0/24".into()),
                ..Default::default()
            }])
            .await?;
        let committed = start.elapsed();
        let data = store.host_filter_data(&host).await?;
        let filters = port_filters::build(&data);
        let elapsed = start.elapsed();
        statements = store.statements() - before;
        size = serde_json::to_vec(&filters)?.len();
        assert_eq!(filters.len(), n, "every port of the host is in its filters");
        times.push((elapsed.as_secs_f64() * 1000.0, committed.as_secs_f64() * 1000.0));
    }
    let mut total: Vec<f64> = times.iter().map(|t| t.0).collect();
    let mut feed: Vec<f64> = times.iter().map(|t| t.0 - t.1).collect();
    total.sort_by(f64::total_cmp);
    feed.sort_by(f64::total_cmp);
    println!("ports on the host, all in one self-referencing group: {n}");
    println!(
        "rule change -> host's HostFilters built: p50 {:.1} ms, max {:.1} ms ({changes} changes)",
        percentile(&total, 0.5),
        percentile(&total, 1.0)
    );
    println!(
        "of which building HostFilters (after commit): p50 {:.1} ms, max {:.1} ms",
        percentile(&feed, 0.5),
        percentile(&feed, 1.0)
    );
    println!("statements per change (rule insert transaction + feed): {statements}");
    println!("HostFilters JSON size: {:.1} MiB", size as f64 / (1024.0 * 1024.0));
    store.close().await;
    Ok(())
}
