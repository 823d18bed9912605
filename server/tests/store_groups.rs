//! Server groups, their members, request specs, aggregates and host zones (migration 0026),
//! and the group check in the placing transaction under concurrency, on SQLite and PostgreSQL.

mod common;

use meridian_server::store::Store;
use meridian_server::store::groups::ServerGroup;
use meridian_server::store::hosts::{Claim, HostInventory, Ratios};

fn inventory(zone: &str) -> HostInventory {
    HostInventory {
        availability_zone: zone.into(),
        hypervisor_type: "test".into(),
        cpu_arch: "x86_64".into(),
        libvirt_uri: "test:///default".into(),
        host_ip: "127.0.0.1".into(),
        vcpus: 64,
        memory_mb: 65536,
        disk_gb: 1000,
        ..Default::default()
    }
}

fn group(id: &str, policy: &str, rules: &str) -> ServerGroup {
    ServerGroup {
        id: id.into(),
        name: id.into(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        policy: policy.into(),
        rules: rules.into(),
        created_at: meridian_server::store::now(),
    }
}

/// A building instance waiting to be placed.
fn building(id: &str) -> meridian_server::store::instances::Instance {
    meridian_server::store::instances::Instance {
        vm_state: "building".into(),
        task_state: Some("scheduling".into()),
        power_state: 0,
        ..common::instance(id)
    }
}

async fn scenario(s: &Store, backend: &str) {
    // Groups and members; a deleted member stops counting.
    s.create_server_group(&group("g1", "anti-affinity", "{}")).await.expect("create");
    s.create_server_group(&group("g2", "affinity", "{}")).await.expect("create");
    assert_eq!(s.count_server_groups("p1").await.expect("count"), 2, "{backend}");
    assert_eq!(s.list_server_groups(Some("p2")).await.expect("list").len(), 0, "{backend}");
    for id in ["i1", "i2"] {
        s.create_instance(&building(id), None).await.expect("instance");
    }
    assert!(s.add_group_members("g2", &["i1", "i2"], 2).await.expect("add"), "{backend}");
    assert!(!s.add_group_members("g2", &["i3"], 2).await.expect("add"), "{backend}: over the member limit");
    assert_eq!(s.group_members(&["g2"]).await.expect("members").len(), 2, "{backend}");
    s.mark_instance_deleted("i2").await.expect("delete");
    let live = s.group_members(&["g2"]).await.expect("members");
    assert_eq!(live.iter().map(|m| m.instance_id.as_str()).collect::<Vec<_>>(), ["i1"], "{backend}");
    assert_eq!(s.groups_of_instance("i1").await.expect("groups")[0].id, "g2", "{backend}");
    assert!(s.add_group_members("nope", &["i1"], -1).await.is_err(), "{backend}: unknown group");

    // Request specs.
    s.set_scheduler_hints("i1", r#"{"same_host":["x"]}"#).await.expect("hints");
    assert_eq!(s.scheduler_hints("i1").await.expect("hints")["same_host"][0], "x", "{backend}");
    assert_eq!(s.scheduler_hints("i9").await.expect("hints"), serde_json::json!({}), "{backend}");

    // Twenty members of one anti-affinity group placed at once on one host: one wins.
    let host = s.register_host("c1", &inventory("nova")).await.expect("host");
    let ids: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for id in &ids {
        s.create_instance(&building(id), None).await.expect("instance");
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(s.add_group_members("g1", &refs, -1).await.expect("members"), "{backend}");
    let ratios = Ratios { cpu: 1.0, ram: 1.0, disk: 1.0 };
    let claim = Claim { vcpus: 1, memory_mb: 128, disk_gb: 1 };
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let (s, host) = (s.clone(), host.clone());
        tasks.push(tokio::spawn(async move { s.place_instance(&id, &host, claim, ratios, "[]", "[]").await }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.expect("join").expect("place") {
            won += 1;
        }
    }
    assert_eq!(won, 1, "{backend}: anti-affinity holds under concurrent placement");
    let h = s.get_host(&host).await.expect("host");
    assert_eq!(h.vcpus_used, 1, "{backend}: the refused placements claimed nothing");
    // Affinity: the first member decides, the next must follow.
    let other = s.register_host("c2", &inventory("nova")).await.expect("host");
    s.create_server_group(&group("g3", "affinity", "{}")).await.expect("create");
    for id in ["a1", "a2"] {
        s.create_instance(&building(id), None).await.expect("instance");
    }
    assert!(s.add_group_members("g3", &["a1", "a2"], -1).await.expect("members"));
    assert!(s.place_instance("a1", &other, claim, ratios, "[]", "[]").await.expect("place"), "{backend}");
    assert!(!s.place_instance("a2", &host, claim, ratios, "[]", "[]").await.expect("place"), "{backend}");
    assert!(s.place_instance("a2", &other, claim, ratios, "[]", "[]").await.expect("place"), "{backend}");

    // Aggregates: names unique, hosts by name, metadata, and the hosts' zone follows.
    let a = s.create_aggregate("u-1", "rack1", Some("az1")).await.expect("aggregate");
    assert!(matches!(
        s.create_aggregate("u-2", "rack1", None).await,
        Err(meridian_server::store::StoreError::Conflict(_))
    ));
    assert!(s.add_aggregate_host(a.id, "c1").await.expect("add"), "{backend}");
    assert!(!s.add_aggregate_host(a.id, "c1").await.expect("add again"), "{backend}");
    assert_eq!(s.get_host(&host).await.expect("host").availability_zone, "az1", "{backend}");
    // The agent's next registration keeps the aggregate's zone.
    s.register_host("c1", &inventory("elsewhere")).await.expect("re-register");
    assert_eq!(s.get_host(&host).await.expect("host").availability_zone, "az1", "{backend}");
    s.update_aggregate_metadata(a.id, &[("availability_zone".into(), None), ("k".into(), Some("v".into()))])
        .await
        .expect("metadata");
    let got = s.get_aggregate(a.id).await.expect("aggregate");
    assert_eq!(got.metadata.into_iter().collect::<Vec<_>>(), [("k".to_string(), "v".to_string())], "{backend}");
    assert_eq!(s.get_host(&host).await.expect("host").availability_zone, "elsewhere", "{backend}: reported zone");
    s.rename_aggregate(a.id, "rack2").await.expect("rename");
    assert!(s.remove_aggregate_host(a.id, "c1").await.expect("remove"), "{backend}");
    assert!(!s.remove_aggregate_host(a.id, "c1").await.expect("remove again"), "{backend}");
    s.delete_aggregate(a.id).await.expect("delete");
    assert!(s.list_aggregates().await.expect("list").is_empty(), "{backend}");
    s.delete_server_group("g1").await.expect("delete group");
    assert!(s.get_server_group("g1").await.is_err(), "{backend}");
    assert!(s.groups_of_instance("m0").await.expect("groups").is_empty(), "{backend}: membership gone");
}

#[tokio::test]
async fn groups_aggregates_and_zones_on_every_backend() {
    for ts in common::stores().await {
        scenario(&ts.store, ts.name).await;
        ts.drop_db().await;
    }
}
