//! Neutron store scenario on every backend (SQLite and PostgreSQL): networks, subnets, ports,
//! IPAM under real concurrency (PostgreSQL runs 16 connections), quotas, in-use rules, and a
//! throughput measurement on a /16.

mod common;

use std::collections::HashSet;
use std::time::Instant;

use ipnet::IpNet;
use meridian_server::store::Store;
use meridian_server::store::network::{IpRequest, NetError, Network, NewPort, PortUpdate, Subnet};

fn kind(e: &NetError) -> &'static str {
    e.kind().unwrap_or("store error")
}

async fn network(store: &Store, project: &str, name: &str) -> Network {
    let mut n = Network::new(project);
    n.name = name.into();
    store.create_networks(vec![n]).await.expect("network").remove(0)
}

async fn subnet(store: &Store, project: &str, net: &str, cidr: &str) -> Subnet {
    let cidr: IpNet = cidr.parse().expect("cidr");
    store.create_subnets(vec![Subnet::new(project, net, &cidr)]).await.expect("subnet").remove(0)
}

fn ips(p: &meridian_server::store::network::Port) -> Vec<String> {
    p.fixed_ips.iter().map(|f| f.ip_address.clone()).collect()
}

async fn scenario(name: &str, store: &Store) {
    let proj = "p-1";
    let net = network(store, proj, "n1").await;
    let sub = subnet(store, proj, &net.id, "10.0.0.0/24").await;
    assert_eq!(sub.gateway_ip.as_deref(), Some("10.0.0.1"));
    let got = store.get_network(&net.id).await.expect("get");
    assert_eq!(got.subnets, vec![sub.id.clone()]);
    assert_eq!(got.revision_number, 1, "{name}: subnet creation bumps the network");

    // Overlapping subnets on one network are refused; on another network they are fine.
    let overlap: IpNet = "10.0.0.128/25".parse().expect("cidr");
    let err = store.create_subnets(vec![Subnet::new(proj, &net.id, &overlap)]).await.expect_err("overlap");
    assert_eq!(kind(&err), "InvalidInput", "{name}");
    let net2 = network(store, proj, "n2").await;
    subnet(store, proj, &net2.id, "10.0.0.0/24").await;

    // Sequential allocation, explicit addresses, conflicts.
    let p1 = store.create_port(NewPort::new(proj, &net.id)).await.expect("p1");
    assert_eq!(ips(&p1), vec!["10.0.0.2"], "{name}");
    let mut req = NewPort::new(proj, &net.id);
    req.fixed_ips =
        Some(vec![IpRequest { subnet_id: Some(sub.id.clone()), ip_address: Some("10.0.0.9".parse().expect("ip")) }]);
    let p2 = store.create_port(req.clone()).await.expect("p2");
    assert_eq!(ips(&p2), vec!["10.0.0.9"]);
    req.id = meridian_server::store::new_uuid();
    let err = store.create_port(req).await.expect_err("taken");
    assert_eq!(kind(&err), "IpAddressAlreadyAllocated", "{name}");
    let p3 = store.create_port(NewPort::new(proj, &net.id)).await.expect("p3");
    assert_eq!(ips(&p3), vec!["10.0.0.10"], "{name}: next after the highest");

    // Bulk creation is atomic: the failing second port takes the first one down with it.
    let mut a = NewPort::new(proj, &net.id);
    a.fixed_ips = Some(vec![IpRequest { subnet_id: None, ip_address: Some("10.0.0.50".parse().expect("ip")) }]);
    let mut b = a.clone();
    b.id = meridian_server::store::new_uuid();
    let err = store.create_ports(vec![a, b]).await.expect_err("bulk conflict");
    assert_eq!(kind(&err), "IpAddressAlreadyAllocated", "{name}");
    assert_eq!(store.list_ports(&Default::default()).await.expect("list").len(), 3, "{name}");

    // MACs are unique per network.
    let mut m = NewPort::new(proj, &net.id);
    m.mac_address = Some(p1.mac_address.clone());
    assert_eq!(kind(&store.create_port(m).await.expect_err("mac")), "MacAddressInUse", "{name}");

    // Updating fixed IPs releases the old address; deleting the port frees its address.
    let moved = store
        .update_port(
            &p1.id,
            &PortUpdate {
                fixed_ips: Some(vec![IpRequest {
                    subnet_id: Some(sub.id.clone()),
                    ip_address: Some("10.0.0.100".parse().expect("ip")),
                }]),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(ips(&moved), vec!["10.0.0.100"]);
    assert_eq!(moved.revision_number, 1);
    let mut again = NewPort::new(proj, &net.id);
    again.fixed_ips = Some(vec![IpRequest { subnet_id: None, ip_address: Some("10.0.0.2".parse().expect("ip")) }]);
    let again = store.create_port(again).await.expect("reuse released");
    store.delete_port(&again.id).await.expect("delete");
    assert_eq!(kind(&store.delete_port(&again.id).await.expect_err("gone")), "PortNotFound");

    // Device ports for compute.
    let mut dev = NewPort::new(proj, &net.id);
    dev.device_id = "vm-1".into();
    dev.device_owner = "compute:nova".into();
    let dev = store.create_port(dev).await.expect("device port");
    assert_eq!(store.ports_by_device("vm-1").await.expect("by device").len(), 1);
    let bound = store.bind_port(&dev.id, "node-1").await.expect("bind");
    assert_eq!((bound.status.as_str(), bound.vif_type.as_str()), ("ACTIVE", "ovs"));

    // In use: the network and subnet stay; DHCP ports do not block.
    assert_eq!(kind(&store.delete_network(&net.id).await.expect_err("in use")), "NetworkInUse", "{name}");
    assert_eq!(kind(&store.delete_subnet(&sub.id).await.expect_err("in use")), "SubnetInUse", "{name}");
    for p in store.list_ports(&Default::default()).await.expect("list") {
        if p.network_id == net.id {
            store.delete_port(&p.id).await.expect("delete");
        }
    }
    let mut dhcp = NewPort::new(proj, &net.id);
    dhcp.device_owner = "network:dhcp".into();
    let dhcp = store.create_port(dhcp).await.expect("dhcp");
    store.delete_network(&net.id).await.expect("delete network");
    assert_eq!(kind(&store.get_port(&dhcp.id).await.expect_err("gone")), "PortNotFound");
    assert_eq!(kind(&store.get_subnet(&sub.id).await.expect_err("gone")), "SubnetNotFound");

    // Quotas are enforced on creation, including for bulk requests.
    store.set_quota("p-q", "network:network", 2).await.expect("quota");
    let err = store
        .create_networks(vec![Network::new("p-q"), Network::new("p-q"), Network::new("p-q")])
        .await
        .expect_err("over");
    assert_eq!(kind(&err), "OverQuota", "{name}");
    store.create_networks(vec![Network::new("p-q"), Network::new("p-q")]).await.expect("within quota");
    assert_eq!(kind(&store.create_networks(vec![Network::new("p-q")]).await.expect_err("over")), "OverQuota");
    assert_eq!(store.network_usage("p-q").await.expect("usage")["network"], 2);

    concurrency(name, store).await;
    throughput(name, store).await;
}

/// Many concurrent creations on a /28: every address handed out once, the rest refused with
/// IpAddressGenerationFailure.
async fn concurrency(name: &str, store: &Store) {
    let net = network(store, "p-c", "race").await;
    subnet(store, "p-c", &net.id, "10.9.0.0/28").await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (store, net_id) = (store.clone(), net.id.clone());
        tasks.push(tokio::spawn(async move { store.create_port(NewPort::new("p-c", &net_id)).await }));
    }
    let mut addrs = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(p) => addrs.extend(ips(&p)),
            Err(e) => {
                assert_eq!(kind(&e), "IpAddressGenerationFailure", "{name}: {e}");
                refused += 1;
            }
        }
    }
    let unique: HashSet<&String> = addrs.iter().collect();
    assert_eq!(unique.len(), addrs.len(), "{name}: duplicates in {addrs:?}");
    assert_eq!(addrs.len(), 13, "{name}");
    assert_eq!(refused, 27, "{name}");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT ip_address) FROM ip_allocations WHERE network_id = $1")
        .bind(&net.id)
        .fetch_one(&mut *store.conn().await.expect("conn"))
        .await
        .expect("count");
    assert_eq!(rows, 13, "{name}");
}

/// Ports per second on a /16, sequential then concurrent; the last batch must not be much
/// slower than the first (candidates come from the index, not from a scan).
async fn throughput(name: &str, store: &Store) {
    store.set_quota("p-t", "network:port", -1).await.expect("unlimited ports");
    let net = network(store, "p-t", "big").await;
    subnet(store, "p-t", &net.id, "172.16.0.0/16").await;
    let batch = 500;
    let start = Instant::now();
    for _ in 0..batch {
        store.create_port(NewPort::new("p-t", &net.id)).await.expect("port");
    }
    let first = start.elapsed();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, net_id) = (store.clone(), net.id.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..(batch / 8) + usize::from(w < batch % 8) {
                store.create_port(NewPort::new("p-t", &net_id)).await.expect("port");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let second = start.elapsed();
    let start = Instant::now();
    for _ in 0..batch {
        store.create_port(NewPort::new("p-t", &net.id)).await.expect("port");
    }
    let third = start.elapsed();
    let rate = |d: std::time::Duration| batch as f64 / d.as_secs_f64();
    println!(
        "{name}: ports/s on a /16 — first {batch}: {:.0}, next {batch} (8 concurrent): {:.0}, last {batch}: {:.0}",
        rate(first),
        rate(second),
        rate(third)
    );
    assert!(third.as_secs_f64() < first.as_secs_f64() * 3.0 + 1.0, "{name}: allocation slows down with size");
    let all = store.list_ports(&Default::default()).await.expect("list");
    let mine: Vec<String> = all.iter().filter(|p| p.network_id == net.id).flat_map(ips).collect();
    let unique: HashSet<&String> = mine.iter().collect();
    assert_eq!(mine.len(), 3 * batch);
    assert_eq!(unique.len(), mine.len(), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_store_on_every_backend() {
    for ts in common::stores().await {
        scenario(ts.name, &ts.store).await;
        ts.drop_db().await;
    }
}
