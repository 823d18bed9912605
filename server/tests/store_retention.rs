//! Retention on SQLite and PostgreSQL: deleted instances past the window go with every row keyed
//! on them, recent deletions and live instances stay, batches are bounded, finished work and
//! expired tokens go.

mod common;

use std::time::Duration;

use ipnet::IpNet;
use meridian_server::store::hosts::HostInventory;
use meridian_server::store::identity::{Token, User};
use meridian_server::store::instances::{Instance, InstanceAction, InstanceFilter};
use meridian_server::store::network::{Network, NewPort, Subnet};
use meridian_server::store::retention::{Batching, Cutoffs};
use meridian_server::store::{Store, new_uuid, now};

/// Long before any cutoff a test uses.
const LONG_AGO: &str = "2020-01-01T00:00:00.000000Z";

fn instance(id: &str, host: &str) -> Instance {
    Instance { flavor: "{}".into(), host_id: Some(host.into()), ..common::instance(id) }
}

/// An instance with an action, an action event and a finished work item.
async fn with_history(s: &Store, id: &str, host: &str) {
    let ts = now();
    let action = InstanceAction {
        id: new_uuid(),
        instance_id: id.into(),
        request_id: format!("req-{id}"),
        action: "create".into(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        message: None,
        start_time: ts.clone(),
        finish_time: None,
        updated_at: ts,
    };
    s.create_instance(&instance(id, host), Some(&action)).await.expect("create");
    s.start_event(&action.id, "compute__do_build_and_run_instance", Some(host)).await.expect("event");
    let w = s.enqueue_work(id, host, "{\"op\":\"build\"}").await.expect("work");
    assert!(s.finish_work(&w, "done", None).await.expect("finish"));
}

/// Marks an instance deleted `LONG_AGO`.
async fn deleted_long_ago(s: &Store, id: &str) {
    s.mark_instance_deleted(id).await.expect("delete");
    exec(s, "UPDATE instances SET terminated_at = $2, updated_at = $2 WHERE id = $1", &[id, LONG_AGO]).await;
}

async fn exec(s: &Store, sql: &str, args: &[&str]) {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    q.execute(&mut *s.conn().await.expect("conn")).await.expect(sql);
}

async fn count(s: &Store, sql: &str, arg: &str) -> i64 {
    sqlx::query_scalar(sql).bind(arg).fetch_one(&mut *s.conn().await.expect("conn")).await.expect(sql)
}

/// Rows keyed on an instance, in every table that keys on one.
async fn rows_of(s: &Store, id: &str) -> [i64; 5] {
    [
        count(s, "SELECT COUNT(*) FROM instances WHERE id = $1", id).await,
        count(s, "SELECT COUNT(*) FROM instance_transitions WHERE instance_id = $1", id).await,
        count(s, "SELECT COUNT(*) FROM instance_actions WHERE instance_id = $1", id).await,
        count(
            s,
            "SELECT COUNT(*) FROM instance_action_events WHERE action_id IN \
             (SELECT id FROM instance_actions WHERE instance_id = $1)",
            id,
        )
        .await,
        count(s, "SELECT COUNT(*) FROM work WHERE instance_id = $1", id).await,
    ]
}

fn token(id: &str, expires_at: &str) -> Token {
    Token {
        id: id.into(),
        user_id: "u1".into(),
        project_id: None,
        methods: "password".into(),
        audit_id: new_uuid(),
        issued_at: now(),
        expires_at: expires_at.into(),
        revoked: 0,
        domain_id: None,
        system_scope: 0,
        app_cred_id: None,
    }
}

async fn scenario(s: &Store, backend: &str) {
    let inv = HostInventory {
        availability_zone: "nova".into(),
        hypervisor_type: "test".into(),
        cpu_arch: "x86_64".into(),
        libvirt_uri: "test:///default".into(),
        host_ip: "127.0.0.1".into(),
        vcpus: 8,
        memory_mb: 8192,
        disk_gb: 100,
        ..Default::default()
    };
    let host = s.register_host("h1", &inv).await.expect("host");
    for id in ["old", "recent", "live"] {
        with_history(s, id, &host).await;
    }
    // The old instance made a port (in its owned_ports) that its delete did not remove; a
    // port the user passed in still names it too, and is the user's to keep.
    let mut net = Network::new("p1");
    net.name = "n".into();
    let net = s.create_networks(vec![net]).await.expect("network").remove(0);
    let cidr: IpNet = "10.1.0.0/24".parse().expect("cidr");
    s.create_subnets(vec![Subnet::new("p1", &net.id, &cidr)]).await.expect("subnet");
    let mut owned = NewPort::new("p1", &net.id);
    owned.device_id = "old".into();
    owned.device_owner = "compute:nova".into();
    let owned_id = owned.id.clone();
    s.create_instance_port(owned, "old", &format!("[\"{owned_id}\"]")).await.expect("owned port");
    let mut users = NewPort::new("p1", &net.id);
    users.device_id = "old".into();
    let users_port = s.create_port(users).await.expect("user port");

    deleted_long_ago(s, "old").await;
    s.mark_instance_deleted("recent").await.expect("delete recent");
    // The live instance has an old finished work item, and one still open.
    exec(s, "UPDATE work SET updated_at = $2 WHERE instance_id = $1", &["live", LONG_AGO]).await;
    let open = s.enqueue_work("live", &host, "{\"op\":\"stop\"}").await.expect("open work");
    exec(s, "UPDATE work SET updated_at = $2 WHERE id = $1", &[&open, LONG_AGO]).await;

    let old_before = rows_of(s, "old").await;
    assert!(old_before.iter().all(|n| *n > 0), "{backend}: {old_before:?}");
    let recent_before = rows_of(s, "recent").await;
    let live_transitions = s.transitions("live").await.expect("timeline").len();

    let batching = Batching { size: 500, pause: Duration::ZERO };
    let p = s.purge(&Cutoffs::older_than(Duration::from_secs(3600)), &batching).await.expect("purge");
    assert_eq!(p.instances, 1, "{backend}: {p:?}");
    assert_eq!(p.instance_transitions, old_before[1] as u64, "{backend}");
    assert_eq!(p.instance_actions, 1, "{backend}");
    assert_eq!(p.instance_action_events, 1, "{backend}");
    assert_eq!(p.work, 2, "{backend}: the old instance's and the live one's finished item");
    assert_eq!((p.ports, p.ip_allocations), (1, 1), "{backend}");

    // The old instance is gone with everything keyed on it.
    assert_eq!(rows_of(s, "old").await, [0; 5], "{backend}");
    assert!(s.get_instance("old").await.is_err(), "{backend}");
    assert!(s.get_port(&owned_id).await.is_err(), "{backend}: its own port goes");
    assert_eq!(count(s, "SELECT COUNT(*) FROM ip_allocations WHERE port_id = $1", &owned_id).await, 0);
    assert!(s.get_port(&users_port.id).await.is_ok(), "{backend}: the user's port stays");

    // The recent deletion stays, whole, and changes-since still shows it.
    assert_eq!(rows_of(s, "recent").await, recent_before, "{backend}");
    let since = s
        .list_instances(&InstanceFilter { changes_since: Some(LONG_AGO.into()), ..Default::default() })
        .await
        .expect("changes-since");
    assert!(since.iter().any(|i| i.id == "recent" && i.deleted == 1), "{backend}");
    assert!(!since.iter().any(|i| i.id == "old"), "{backend}");

    // The live instance keeps its timeline, actions and open work; its old finished item went.
    assert_eq!(s.transitions("live").await.expect("timeline").len(), live_transitions, "{backend}");
    assert_eq!(s.list_actions("live").await.expect("actions").len(), 1, "{backend}");
    assert_eq!(s.get_work(&open).await.expect("open work").state, "pending", "{backend}");
    assert_eq!(count(s, "SELECT COUNT(*) FROM work WHERE instance_id = $1", "live").await, 1, "{backend}");

    // Nothing left to purge: a second pass removes nothing.
    let again = s.purge(&Cutoffs::older_than(Duration::from_secs(3600)), &batching).await.expect("purge");
    assert_eq!(again.total(), 0, "{backend}: {again:?}");

    // Batches are bounded: one batch takes at most its size, a pass takes every batch.
    for i in 0..5 {
        let id = format!("many{i}");
        with_history(s, &id, &host).await;
        deleted_long_ago(s, &id).await;
    }
    let cutoffs = Cutoffs::older_than(Duration::from_secs(3600));
    let one = s.purge_deleted_instances(&cutoffs.deleted_before, 2).await.expect("batch");
    assert_eq!((one.instances, one.instance_actions, one.work), (2, 2, 2), "{backend}: {one:?}");
    let left = count(s, "SELECT COUNT(*) FROM instances WHERE id LIKE $1", "many%").await;
    assert_eq!(left, 3, "{backend}");
    let rest = s.purge(&cutoffs, &Batching { size: 2, pause: Duration::ZERO }).await.expect("purge");
    assert_eq!(rest.instances, 3, "{backend}: {rest:?}");
    assert_eq!(count(s, "SELECT COUNT(*) FROM instances WHERE id LIKE $1", "many%").await, 0, "{backend}");

    // Expired tokens go, valid ones stay.
    s.create_domain("d1", "d1", "").await.expect("domain");
    let user = User {
        id: "u1".into(),
        name: "u1".into(),
        domain_id: "d1".into(),
        password_hash: None,
        enabled: 1,
        email: None,
        description: None,
        default_project_id: None,
        extra: "{}".into(),
    };
    s.create_user(&user).await.expect("user");
    s.insert_token(&token("expired", LONG_AGO)).await.expect("token");
    s.insert_token(&token("valid", "2999-01-01T00:00:00.000000Z")).await.expect("token");
    let p = s.purge(&Cutoffs::older_than(Duration::from_secs(3600)), &batching).await.expect("purge");
    assert_eq!(p.tokens, 1, "{backend}: {p:?}");
    assert!(s.token_context("valid").await.expect("read").is_some(), "{backend}");
    assert_eq!(count(s, "SELECT COUNT(*) FROM tokens WHERE expires_at < $1", &now()).await, 0, "{backend}");
}

#[tokio::test]
async fn retention_purges_old_deletions_on_every_backend() {
    for ts in common::stores().await {
        scenario(&ts.store, ts.name).await;
        ts.drop_db().await;
    }
}
