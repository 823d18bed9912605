//! Block storage rows on every backend (SQLite and PostgreSQL): quota-guarded creates, guarded
//! status changes with their transitions, attachments moving with their volumes, work items
//! finished once, deadlines, placement usage, types in use.

mod common;

use meridian_server::store::volume::{DEFAULT_TYPE_ID, Volume, VolumeLimits, VolumeUsage, new_attachment};
use meridian_server::store::{Store, StoreError, new_uuid, now};

fn volume(project: &str, size: i64, host: &str) -> Volume {
    let ts = now();
    Volume {
        id: new_uuid(),
        project_id: project.into(),
        user_id: "u1".into(),
        name: Some("v".into()),
        description: None,
        size,
        status: "creating".into(),
        attach_status: "detached".into(),
        volume_type_id: DEFAULT_TYPE_ID.into(),
        availability_zone: "nova".into(),
        host_id: Some(host.into()),
        bootable: 0,
        readonly: 0,
        metadata: "{}".into(),
        deadline: None,
        created_at: ts.clone(),
        updated_at: ts,
        snapshot_id: None,
        source_volid: None,
    }
}

async fn scenario(store: &Store, backend: &str) {
    let limits = VolumeLimits { volumes: 2, gigabytes: 10, type_volumes: -1, type_gigabytes: -1 };
    let a = volume("p1", 4, "h1");
    assert!(store.create_volume(&a, limits).await.expect("create").is_some(), "{backend}");
    // Over the gigabytes: nothing stored.
    assert!(store.create_volume(&volume("p1", 7, "h1"), limits).await.expect("create").is_none(), "{backend}");
    let b = volume("p1", 6, "h2");
    assert!(store.create_volume(&b, limits).await.expect("create").is_some(), "{backend}");
    // Over the count.
    assert!(store.create_volume(&volume("p1", 1, "h1"), limits).await.expect("create").is_none(), "{backend}");
    // Unlimited for another project.
    let free = VolumeLimits { volumes: -1, gigabytes: -1, type_volumes: -1, type_gigabytes: -1 };
    assert!(store.create_volume(&volume("p2", 500, "h1"), free).await.expect("create").is_some(), "{backend}");
    // A type's own limits hold within the project's (the guard reads the type's count and sum).
    let typed = VolumeLimits { volumes: -1, gigabytes: -1, type_volumes: 2, type_gigabytes: 600 };
    assert!(store.create_volume(&volume("p2", 101, "h1"), typed).await.expect("create").is_none(), "{backend}: 601G");
    assert!(store.create_volume(&volume("p2", 100, "h1"), typed).await.expect("create").is_some(), "{backend}");
    assert!(store.create_volume(&volume("p2", 1, "h1"), typed).await.expect("create").is_none(), "{backend}: third");
    assert_eq!(
        store.volume_usage_of_type("p2", DEFAULT_TYPE_ID).await.expect("usage"),
        VolumeUsage { volumes: 2, gigabytes: 600 },
        "{backend}"
    );
    assert_eq!(store.volume_usage_of_type("p2", "other").await.expect("usage"), VolumeUsage::default(), "{backend}");
    assert_eq!(store.volume_usage("p1").await.expect("usage"), VolumeUsage { volumes: 2, gigabytes: 10 }, "{backend}");
    let by_host = store.volume_gb_by_host().await.expect("by host");
    assert_eq!((by_host.get("h1"), by_host.get("h2")), (Some(&604), Some(&6)), "{backend}");

    // Guarded status changes: only from the expected statuses, each recorded.
    assert!(!store.set_volume_status(&a.id, &["available"], "deleting", None).await.expect("set"), "{backend}");
    assert!(store.set_volume_status(&a.id, &["creating"], "available", None).await.expect("set"), "{backend}");

    // An attachment with its work item, in one transaction; the event finishes it once.
    let mut att = new_attachment(&a.id, Some("i1"), Some("h1"), "attaching");
    att.by_compute = 1;
    let deadline = "2000-01-01T00:00:00.000000Z";
    assert!(store.reserve_volume(&att, "attaching", Some(deadline), Some(("h1", "{}"))).await.expect("reserve"));
    assert!(
        !store
            .reserve_volume(&new_attachment(&a.id, None, None, "reserved"), "reserved", None, None)
            .await
            .expect("again"),
        "{backend}"
    );
    let leased = store.lease_work("h1", 60, 10).await.expect("lease");
    assert_eq!(leased.len(), 1, "{backend}");
    assert_eq!(leased[0].instance_id, "i1", "{backend}: attach work is keyed by the instance");
    let past = store.volumes_past_deadline(&now()).await.expect("deadline");
    assert_eq!(past.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), [a.id.as_str()], "{backend}");
    let work = &leased[0].id;
    assert!(
        store
            .finish_attachment_work(work, "done", None, &att.id, Some("attached"), &a.id, &["attaching"], "in-use")
            .await
            .expect("finish")
    );
    assert!(
        !store
            .finish_attachment_work(work, "done", None, &att.id, Some("attached"), &a.id, &["attaching"], "in-use")
            .await
            .expect("repeat"),
        "{backend}: a repeated event changes nothing"
    );
    let got = store.get_volume(&a.id).await.expect("get");
    assert_eq!(
        (got.status.as_str(), got.attach_status.as_str(), got.deadline),
        ("in-use", "attached", None),
        "{backend}"
    );
    assert!(store.volumes_past_deadline(&now()).await.expect("deadline").is_empty(), "{backend}");
    let of = store.attachments_of_instances(&["i1"]).await.expect("by instance");
    assert_eq!(of["i1"][0].status, "attached", "{backend}");

    // Detach and release: the attachment goes with the move to available.
    assert!(
        store.move_attachment(&att.id, None, None, &a.id, &["in-use"], "available", None, None).await.expect("move")
    );
    assert!(store.instance_attachments("i1").await.expect("list").is_empty(), "{backend}");
    assert_eq!(store.get_volume(&a.id).await.expect("get").attach_status, "detached", "{backend}");

    // Extend done: size and status in one step.
    let w = {
        let mut tx_ok =
            store.begin_volume_work(&a.id, &["available"], "extending", &now(), "h1", "{}").await.expect("begin");
        assert!(tx_ok, "{backend}");
        tx_ok = !store.begin_volume_work(&a.id, &["available"], "extending", &now(), "h1", "{}").await.expect("twice");
        assert!(tx_ok, "{backend}: a second extend is refused");
        store.lease_work("h1", 60, 10).await.expect("lease").remove(0).id
    };
    assert!(store.finish_extend(&a.id, &w, 8).await.expect("extend"));
    let got = store.get_volume(&a.id).await.expect("get");
    assert_eq!((got.size, got.status.as_str()), (8, "available"), "{backend}");

    // Types: in use → not deleted.
    assert!(matches!(store.delete_volume_type(DEFAULT_TYPE_ID).await, Err(StoreError::Conflict(_))), "{backend}");

    // Deleted by its agent: the row goes, the history stays and ends in `deleted`.
    assert!(store.begin_volume_work(&a.id, &["available"], "deleting", &now(), "h1", "{}").await.expect("begin"));
    let w = store.lease_work("h1", 60, 10).await.expect("lease").remove(0).id;
    assert!(store.volume_deleted(&a.id, &w).await.expect("deleted"));
    assert!(matches!(store.get_volume(&a.id).await, Err(StoreError::NotFound(_))), "{backend}");
    assert_eq!(
        store.volume_transitions(&a.id).await.expect("history"),
        ["creating", "available", "attaching", "in-use", "available", "extending", "available", "deleting", "deleted"],
        "{backend}"
    );
}

#[tokio::test]
async fn volumes_on_every_backend() {
    for t in common::stores().await {
        scenario(&t.store, t.name).await;
        t.drop_db().await;
    }
}
