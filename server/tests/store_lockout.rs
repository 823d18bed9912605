//! Account lockout state (migration 0011), run on SQLite and PostgreSQL.

mod common;

use meridian_server::store::identity::User;
use meridian_server::store::lockout::FailedAuth;
use meridian_server::store::{Store, StoreError, new_hex_id};

async fn scenario(s: &Store, backend: &str) {
    s.create_domain("default", "Default", "").await.expect("domain");
    let mut u = User {
        id: new_hex_id(),
        name: "alice".into(),
        domain_id: "default".into(),
        password_hash: Some("$argon2id$x".into()),
        enabled: 1,
        email: None,
        description: None,
        default_project_id: None,
        extra: "{}".into(),
    };
    s.create_user(&u).await.expect("user");
    assert_eq!(s.failed_auth(&u.id).await.expect("read"), FailedAuth { failed_auth_count: 0, failed_auth_at: None });

    // Concurrent failures all count.
    let failures: Vec<_> = (0..3).map(|_| s.record_failed_auth(&u.id)).collect();
    for f in futures_util::future::join_all(failures).await {
        f.expect("record");
    }
    let after = s.failed_auth(&u.id).await.expect("read");
    assert_eq!(after.failed_auth_count, 3, "{backend}");
    let at = after.failed_auth_at.expect("stamped");
    assert!(meridian_server::store::parse_time(&at).is_some(), "{backend}: {at}");

    s.reset_failed_auth(&u.id).await.expect("reset");
    assert_eq!(s.failed_auth(&u.id).await.expect("read").failed_auth_count, 0, "{backend}");

    // Saving a disabled user keeps its failures; saving it enabled (an admin's update) clears them.
    s.record_failed_auth(&u.id).await.expect("record");
    u.enabled = 0;
    s.update_user(&u).await.expect("disable");
    assert_eq!(s.failed_auth(&u.id).await.expect("read").failed_auth_count, 1, "{backend}");
    u.enabled = 1;
    s.update_user(&u).await.expect("enable");
    assert_eq!(s.failed_auth(&u.id).await.expect("read"), FailedAuth { failed_auth_count: 0, failed_auth_at: None });

    assert!(matches!(s.record_failed_auth("missing").await, Err(StoreError::NotFound(_))), "{backend}");
    assert!(matches!(s.failed_auth("missing").await, Err(StoreError::NotFound(_))), "{backend}");
}

#[tokio::test]
async fn lockout_state_on_both_backends() {
    for t in common::stores().await {
        scenario(&t.store, t.name).await;
        t.drop_db().await;
    }
}
