//! Instances: conditional transitions, the timeline, placement with claims, requeue, delete
//! and usage sums — on SQLite and PostgreSQL.

mod common;

use meridian_server::store::Store;
use meridian_server::store::hosts::{Claim, HostInventory, Ratios};
use meridian_server::store::instances::{Expect, Instance, InstanceFilter, NewState};

fn instance(id: &str) -> Instance {
    Instance {
        vm_state: "building".into(),
        task_state: Some("scheduling".into()),
        power_state: 0,
        ..common::instance(id)
    }
}

async fn scenario(s: &Store, backend: &str) {
    let inv = HostInventory {
        availability_zone: "nova".into(),
        hypervisor_type: "test".into(),
        cpu_arch: "x86_64".into(),
        libvirt_uri: "test:///default".into(),
        host_ip: "127.0.0.1".into(),
        vcpus: 2,
        memory_mb: 256,
        disk_gb: 10,
        ..Default::default()
    };
    let host = s.register_host("h1", &inv).await.expect("host");
    let ratios = Ratios { cpu: 1.0, ram: 1.0, disk: 1.0 };
    let claim = Claim { vcpus: 1, memory_mb: 128, disk_gb: 1 };
    for id in ["i1", "i2", "i3"] {
        s.create_instance(&instance(id), None).await.expect("create");
    }
    assert_eq!(s.project_usage("p1").await.expect("usage"), (3, 3, 384), "{backend}");

    // Two fit on the host; the third placement is refused and leaves no claim behind.
    assert!(s.place_instance("i1", &host, claim, ratios, "[]", "[\"h1\"]").await.expect("place"));
    assert!(s.place_instance("i2", &host, claim, ratios, "[]", "[\"h1\"]").await.expect("place"));
    assert!(!s.place_instance("i3", &host, claim, ratios, "[]", "[\"h1\"]").await.expect("place"), "{backend}");
    let h = s.get_host(&host).await.expect("host");
    assert_eq!(h.memory_mb_used, 256, "{backend}");
    let i1 = s.get_instance("i1").await.expect("i1");
    assert_eq!(
        (i1.task_state.as_deref(), i1.claimed, i1.host_id.as_deref()),
        (Some("networking"), 1, Some(host.as_str()))
    );

    // Conditional transitions: the expectation decides, and only one of two racers wins.
    let to = NewState { vm_state: "building", task_state: Some("spawning"), power_state: None };
    assert!(s.transition("i1", Expect::Task(Some("networking")), to).await.expect("t").is_some());
    assert!(s.transition("i1", Expect::Task(Some("networking")), to).await.expect("t").is_none(), "{backend}");
    let active = NewState { vm_state: "active", task_state: None, power_state: Some(1) };
    assert!(s.transition("i1", Expect::OneOf(&["spawning"]), active).await.expect("t").is_some());
    let walk: Vec<(String, Option<String>)> =
        s.transitions("i1").await.expect("timeline").into_iter().map(|t| (t.vm_state, t.task_state)).collect();
    assert_eq!(
        walk,
        [
            ("building".to_string(), Some("scheduling".to_string())),
            ("building".to_string(), Some("networking".to_string())),
            ("building".to_string(), Some("spawning".to_string())),
            ("active".to_string(), None),
        ],
        "{backend}"
    );

    // Requeue releases the claim (once, however often it is called) and clears the host.
    assert!(s.requeue_instance("i2").await.expect("requeue"));
    s.release_instance_claim("i2").await.expect("idempotent release");
    assert_eq!(s.get_host(&host).await.expect("host").memory_mb_used, 128, "{backend}");
    assert!(s.place_instance("i3", &host, claim, ratios, "[]", "[\"h1\"]").await.expect("room again"));

    // A build is queued on its host once, however many conductor paths resume it at once,
    // and never for an instance that is no longer placed there.
    let action = r#"{"type":"build","instance_id":"i3"}"#;
    let (a, b) = tokio::join!(
        s.queue_build("i3", &host, "h1", action, "2099-01-01T00:00:00.000000Z"),
        s.queue_build("i3", &host, "h1", action, "2099-01-01T00:00:00.000000Z"),
    );
    let queued = [a.expect("queue"), b.expect("queue")];
    assert_eq!(queued.iter().flatten().count(), 1, "{backend}: {queued:?}");
    assert_eq!(s.live_work("i3", &host).await.expect("work"), 1, "{backend}");
    assert!(s.queue_build("i2", &host, "h1", action, "2099-01-01T00:00:00.000000Z").await.expect("q").is_none());

    // Delete: claim back, row kept for changes-since, not listed otherwise.
    s.mark_instance_deleted("i1").await.expect("delete");
    s.mark_instance_deleted("i1").await.expect("delete twice");
    assert_eq!(s.get_host(&host).await.expect("host").memory_mb_used, 128, "{backend}");
    assert_eq!(s.project_usage("p1").await.expect("usage"), (2, 2, 256), "{backend}");
    let live =
        s.list_instances(&InstanceFilter { project_id: Some("p1".into()), ..Default::default() }).await.expect("list");
    assert_eq!(live.len(), 2, "{backend}");
    let since = s
        .list_instances(&InstanceFilter {
            changes_since: Some("2000-01-01T00:00:00.000000Z".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(since.iter().any(|i| i.id == "i1" && i.deleted == 1), "{backend}: changes-since shows deletions");
    assert_eq!(s.unfinished_instances().await.expect("unfinished").len(), 2, "{backend}");
}

#[tokio::test]
async fn instances_on_every_backend() {
    for ts in common::stores().await {
        scenario(&ts.store, ts.name).await;
        ts.drop_db().await;
    }
}

/// The event stream's paged reads: `(updated_at, id)` order across ties, keyset positions that
/// neither skip nor repeat a row, deleted rows included, the project filter; and a server's
/// transitions after a seq or, with none, from a time.
async fn paged_scenario(s: &Store, backend: &str) {
    let at = |n: u32| format!("2026-01-01T00:00:{n:02}.000000Z");
    // Two rows share a time, so the id breaks the tie; one is another project's.
    for (id, t, project) in [("b", 1, "p1"), ("a", 1, "p1"), ("c", 0, "p1"), ("d", 2, "p1"), ("x", 1, "p2")] {
        let mut i = instance(id);
        i.project_id = project.into();
        i.created_at = at(t);
        i.updated_at = at(t);
        s.create_instance(&i, None).await.expect("create");
    }
    s.mark_instance_deleted("d").await.expect("delete");
    let mut order = Vec::new();
    let mut after = (at(0), String::new());
    loop {
        let page = s.instances_changed_page(Some("p1"), (&after.0, &after.1), 2).await.expect("page");
        order.extend(page.iter().map(|i| i.id.clone()));
        match page.last() {
            Some(last) if page.len() == 2 => after = (last.updated_at.clone(), last.id.clone()),
            _ => break,
        }
    }
    assert_eq!(order, ["c", "a", "b", "d"], "{backend}: every row once, in (updated_at, id) order");
    let all = s.instances_changed_page(None, (&at(1), "a"), 10).await.expect("all projects");
    assert_eq!(all.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["b", "x", "d"], "{backend}");

    // "d": created (seq 1 at :02), then deleted now (seq 2).
    let seqs = |v: Vec<meridian_server::store::instances::Transition>| v.into_iter().map(|t| t.seq).collect::<Vec<_>>();
    assert_eq!(seqs(s.transitions_after("d", None, &at(0)).await.expect("t")), [1, 2], "{backend}");
    assert_eq!(seqs(s.transitions_after("d", None, &at(3)).await.expect("t")), [2], "{backend}");
    assert_eq!(seqs(s.transitions_after("d", Some(1), &at(0)).await.expect("t")), [2], "{backend}");
    assert!(s.transitions_after("d", Some(2), &at(0)).await.expect("t").is_empty(), "{backend}");
}

#[tokio::test]
async fn event_stream_pages_on_every_backend() {
    for ts in common::stores().await {
        paged_scenario(&ts.store, ts.name).await;
        ts.drop_db().await;
    }
}
