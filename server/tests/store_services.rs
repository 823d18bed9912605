//! Server loop heartbeats (`service_heartbeats`) and the readiness check, on every backend.

mod common;

use meridian_server::store::Store;
use meridian_server::store::services::ServiceHeartbeat;

async fn scenario(store: &Store, backend: &str) {
    let replica = "replica-a";
    store.service_heartbeat(replica, "nova-scheduler").await.expect("beat");
    store.service_heartbeat(replica, "nova-conductor").await.expect("beat");
    store.service_heartbeat("replica-b", "nova-conductor").await.expect("beat");
    let mine = |rows: Vec<ServiceHeartbeat>| rows.into_iter().filter(|r| r.replica == replica).collect::<Vec<_>>();
    let first = mine(store.service_heartbeats().await.expect("list"));
    let services: Vec<&str> = first.iter().map(|r| r.service.as_str()).collect();
    assert_eq!(services, ["nova-scheduler", "nova-conductor"], "{backend}");
    assert_eq!(first.iter().map(|r| r.num).collect::<Vec<_>>(), [-1, -2], "{backend}");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.service_heartbeat(replica, "nova-conductor").await.expect("beat");
    let second = mine(store.service_heartbeats().await.expect("list"));
    assert_eq!((&second[1].id, second[1].num), (&first[1].id, first[1].num), "{backend}: ids are kept");
    assert!(second[1].updated_at > first[1].updated_at, "{backend}: the heartbeat advances");
    assert_eq!(second[0].updated_at, first[0].updated_at, "{backend}: only the beating service moves");
    assert!(store.ready().await.expect("ready"), "{backend}");
}

#[tokio::test]
async fn service_heartbeats_on_every_backend() {
    for t in common::stores().await {
        scenario(&t.store, t.name).await;
        let store = t.store.clone();
        t.drop_db().await;
        assert!(store.ready().await.is_err(), "a closed store is not ready");
    }
}
