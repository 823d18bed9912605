//! Hosts, claims and the work queue, on SQLite and PostgreSQL.

mod common;

use meridian_server::store::Store;
use meridian_server::store::hosts::{Claim, HostInventory, Ratios};

fn inventory(vcpus: i64) -> HostInventory {
    HostInventory {
        availability_zone: "nova".into(),
        hypervisor_type: "test".into(),
        cpu_arch: "x86_64".into(),
        libvirt_uri: "test:///default".into(),
        host_ip: "127.0.0.1".into(),
        vcpus,
        memory_mb: 8192,
        disk_gb: 100,
        ..Default::default()
    }
}

async fn scenario(s: &Store, backend: &str) {
    let id = s.register_host("c1", &inventory(4)).await.expect("register");
    let again = s.register_host("c1", &inventory(4)).await.expect("re-register");
    assert_eq!(id, again, "{backend}: re-registration keeps the id");
    s.heartbeat(&id, &inventory(4)).await.expect("heartbeat");

    // Agent credentials (migration 0012): found by hash, replaced, unique.
    assert_eq!(s.host_by_credential("h1").await.expect("lookup"), None, "{backend}: no credential yet");
    s.set_host_credential(&id, "h1").await.expect("set");
    assert_eq!(s.host_by_credential("h1").await.expect("lookup"), Some((id.clone(), "c1".to_string())));
    s.set_host_credential(&id, "h2").await.expect("replace");
    assert_eq!(s.host_by_credential("h1").await.expect("lookup"), None, "{backend}: the old one is gone");
    let other = s.register_host("c0", &inventory(1)).await.expect("register c0");
    assert!(s.set_host_credential(&other, "h2").await.is_err(), "{backend}: credential hashes are unique");
    assert!(s.set_host_credential("no-such-host", "h3").await.is_err());

    // 20 concurrent one-vCPU claims on a 4-vCPU host at ratio 1.0: exactly 4 win.
    let ratios = Ratios { cpu: 1.0, ram: 1.0, disk: 1.0 };
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, id) = (s.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            s.claim(&id, Claim { vcpus: 1, memory_mb: 256, disk_gb: 1 }, ratios).await.expect("claim")
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.expect("join") {
            won += 1;
        }
    }
    assert_eq!(won, 4, "{backend}: never overcommitted");
    let h = s.get_host(&id).await.expect("host");
    assert_eq!((h.vcpus_used, h.memory_mb_used, h.disk_gb_used), (4, 1024, 4), "{backend}");
    s.release(&id, Claim { vcpus: 1, memory_mb: 256, disk_gb: 1 }).await.expect("release");
    s.release(&id, Claim { vcpus: 10, memory_mb: 10_000, disk_gb: 10 }).await.expect("release floor");
    let h = s.get_host(&id).await.expect("host");
    assert_eq!((h.vcpus_used, h.memory_mb_used, h.disk_gb_used), (0, 0, 0), "{backend}: never negative");

    // Work: offered until acknowledged, with attempts counted.
    let w = s.enqueue_work("inst-1", &id, "{\"type\":\"stop\"}").await.expect("enqueue");
    // The agent API's image check reads the host's open work by a text match (migration 0012).
    assert_eq!(s.open_work_actions(&id, "stop").await.expect("open"), ["{\"type\":\"stop\"}"], "{backend}");
    assert!(s.open_work_actions(&id, "start").await.expect("open").is_empty());
    assert!(s.open_work_actions(&other, "stop").await.expect("open").is_empty(), "{backend}: another host's");
    let first = s.lease_work(&id, 60, 10).await.expect("lease");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    assert!(s.lease_work(&id, 60, 10).await.expect("lease").is_empty(), "{backend}: leased work is not offered twice");
    // An expired lease (agent died before acknowledging) is offered again.
    sqlx::query("UPDATE work SET leased_until = '2000-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(&w)
        .execute(&mut *s.conn().await.expect("conn"))
        .await
        .expect("expire");
    let second = s.lease_work(&id, 60, 10).await.expect("lease");
    assert_eq!(second.len(), 1, "{backend}");
    assert_eq!(second[0].attempt, 2);
    assert!(s.finish_work(&w, "done", None).await.expect("finish"));
    assert!(!s.finish_work(&w, "done", None).await.expect("duplicate ack"), "{backend}");
    assert_eq!(s.get_work(&w).await.expect("work").state, "done");
    assert!(s.open_work_actions(&id, "stop").await.expect("open").is_empty(), "{backend}: finished work is not open");

    let w2 = s.enqueue_work("inst-2", &id, "{\"type\":\"start\"}").await.expect("enqueue");
    assert_eq!(s.cancel_work("inst-2", None).await.expect("cancel"), 1);
    assert!(s.lease_work(&id, 60, 10).await.expect("lease").is_empty(), "{backend}: cancelled work is not offered");
    assert_eq!(s.get_work(&w2).await.expect("work").state, "cancelled");

    s.set_host_enabled(&id, false, Some("maintenance")).await.expect("disable");
    assert_eq!(s.get_host_by_name("c1").await.expect("host").enabled, 0);
}

#[tokio::test]
async fn hosts_claims_and_work_on_every_backend() {
    for ts in common::stores().await {
        scenario(&ts.store, ts.name).await;
        ts.drop_db().await;
    }
}
