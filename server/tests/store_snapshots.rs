//! Snapshot rows on every backend (SQLite and PostgreSQL): creates guarded by the volume's
//! status and the project's limits (gigabytes shared with volumes), each with its work item,
//! guarded status changes with their transitions, cascade deletes, deadlines.

mod common;

use meridian_server::store::snapshots::{CreateRefused, Snapshot, SnapshotLimits};
use meridian_server::store::volume::{DEFAULT_TYPE_ID, Volume, VolumeLimits};
use meridian_server::store::{Store, new_uuid, now};

fn volume(project: &str, size: i64, host: &str) -> Volume {
    let ts = now();
    Volume {
        id: new_uuid(),
        project_id: project.into(),
        user_id: "u1".into(),
        name: None,
        description: None,
        size,
        status: "available".into(),
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

fn snapshot(v: &Volume) -> Snapshot {
    let ts = now();
    Snapshot {
        id: new_uuid(),
        volume_id: v.id.clone(),
        project_id: v.project_id.clone(),
        user_id: "u1".into(),
        name: Some("s".into()),
        description: None,
        size: v.size,
        status: "creating".into(),
        progress: "0%".into(),
        metadata: "{}".into(),
        deadline: Some("2999-01-01T00:00:00.000000Z".into()),
        created_at: ts.clone(),
        updated_at: ts,
    }
}

async fn scenario(store: &Store, backend: &str) {
    let vlimits = VolumeLimits { volumes: 10, gigabytes: 10, type_volumes: -1, type_gigabytes: -1 };
    let v = volume("p1", 4, "h1");
    assert!(store.create_volume(&v, vlimits).await.expect("volume").is_some(), "{backend}");
    let limits = SnapshotLimits { snapshots: 2, gigabytes: 10 };
    let a = snapshot(&v);
    let made = store.create_snapshot(&a, &["available"], limits, "h1", "{}").await.expect("create");
    assert_eq!(made, Ok(()), "{backend}");
    assert_eq!(store.open_volume_work(&v.id).await.expect("work").len(), 1, "{backend}: its work item");
    // Gigabytes are shared with volumes: 4 + 4 + 4 > 10.
    let refused = store.create_snapshot(&snapshot(&v), &["available"], limits, "h1", "{}").await.expect("create");
    assert_eq!(refused, Err(CreateRefused::Quota), "{backend}");
    assert_eq!(store.volume_usage("p1").await.expect("usage").gigabytes, 8, "{backend}");
    assert_eq!(store.snapshot_usage("p1").await.expect("usage"), (1, 4), "{backend}");
    // A volume in another status: nothing stored, nothing queued.
    let wrong = store.create_snapshot(&snapshot(&v), &["in-use"], limits, "h1", "{}").await.expect("create");
    assert_eq!(wrong, Err(CreateRefused::VolumeState), "{backend}");
    assert_eq!(store.list_snapshots(Some("p1")).await.expect("list").len(), 1, "{backend}");
    assert_eq!(store.open_volume_work(&v.id).await.expect("work").len(), 1, "{backend}");

    // The work's outcome, once only.
    let work_id = store.open_volume_work(&v.id).await.expect("work")[0].0.clone();
    assert!(
        store
            .finish_snapshot_work(&a.id, &work_id, "done", None, &["creating"], "available", Some("100%"))
            .await
            .expect("finish"),
        "{backend}"
    );
    assert!(
        !store.finish_snapshot_work(&a.id, &work_id, "done", None, &["creating"], "error", None).await.expect("again"),
        "{backend}: a repeated event changes nothing"
    );
    let got = store.get_snapshot(&a.id).await.expect("get");
    assert_eq!((got.status.as_str(), got.progress.as_str(), got.deadline), ("available", "100%", None), "{backend}");

    // Deadlines are found; a guarded change from the wrong status does nothing.
    let b = snapshot(&v);
    let b = Snapshot { deadline: Some("2000-01-01T00:00:00.000000Z".into()), ..b };
    let roomy = SnapshotLimits { snapshots: 5, gigabytes: 100 };
    assert_eq!(store.create_snapshot(&b, &["available"], roomy, "h1", "{}").await.expect("create"), Ok(()));
    let late = store.snapshots_past_deadline(&now()).await.expect("late");
    assert_eq!(late.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [b.id.as_str()], "{backend}");
    assert!(!store.set_snapshot_status(&b.id, &["deleting"], "error", None, None).await.expect("set"), "{backend}");
    assert!(store.set_snapshot_status(&b.id, &["creating"], "error", None, None).await.expect("set"), "{backend}");

    // Cascade: both snapshots and the volume to deleting with three work items, in one step.
    let items = vec![(a.id.clone(), "{\"a\":1}".to_string()), (b.id.clone(), "{\"b\":1}".to_string())];
    let d = "2999-01-01T00:00:00.000000Z";
    let began = store
        .begin_cascade_delete(&v.id, &["available"], &items, &["available", "error"], d, "h1", "{\"v\":1}")
        .await
        .expect("cascade");
    assert!(began, "{backend}");
    assert_eq!(store.get_volume(&v.id).await.expect("volume").status, "deleting", "{backend}");
    assert_eq!(store.get_snapshot(&b.id).await.expect("snap").status, "deleting", "{backend}");
    let open = store.open_volume_work(&v.id).await.expect("work");
    assert_eq!(open.len(), 4, "{backend}: b's create and the three deletes");
    // The snapshots go with their work, and with the volume's row in any case.
    let del_a = open.iter().find(|(_, a)| a == "{\"a\":1}").expect("a's delete").0.clone();
    assert!(store.snapshot_deleted(&a.id, &del_a).await.expect("deleted"), "{backend}");
    assert_eq!(
        store.snapshot_transitions(&a.id).await.expect("transitions"),
        ["creating", "available", "deleting", "deleted"],
        "{backend}"
    );
    let del_v = open.iter().find(|(_, a)| a == "{\"v\":1}").expect("volume's delete").0.clone();
    assert!(store.volume_deleted(&v.id, &del_v).await.expect("volume deleted"), "{backend}");
    assert!(store.list_snapshots(None).await.expect("list").is_empty(), "{backend}");
}

#[tokio::test]
async fn snapshots_on_every_backend() {
    for t in common::stores().await {
        scenario(&t.store, t.name).await;
        t.drop_db().await;
    }
}
