//! Identity and compute store scenarios, run on SQLite and PostgreSQL.

mod common;

use meridian_server::store::compute::{Flavor, FlavorFilter, Keypair};
use meridian_server::store::identity::{Grant, Group, NameFilter, Project, Scope, Token, User};
use meridian_server::store::{StoreError, new_hex_id, now};

async fn scenario(s: &meridian_server::store::Store, backend: &str) {
    s.create_domain("default", "Default", "").await.expect("domain");
    assert!(matches!(s.create_domain("default", "Default", "").await, Err(StoreError::Conflict(_))), "{backend}");

    let p = Project {
        id: new_hex_id(),
        name: "demo".into(),
        domain_id: "default".into(),
        description: String::new(),
        enabled: 1,
        tags: "[]".into(),
        parent_id: None,
    };
    s.create_project(&p).await.expect("project");
    let dup = Project { id: new_hex_id(), ..p.clone() };
    assert!(matches!(s.create_project(&dup).await, Err(StoreError::Conflict(_))), "{backend}: same name in domain");
    assert_eq!(s.get_project_by_name("default", "demo").await.expect("by name").id, p.id);
    let filtered = s
        .list_projects(&NameFilter { name: Some("demo".into()), enabled: Some(true), ..Default::default() })
        .await
        .expect("list");
    assert_eq!(filtered.len(), 1, "{backend}");
    let none = s.list_projects(&NameFilter { enabled: Some(false), ..Default::default() }).await.expect("list");
    assert!(none.is_empty(), "{backend}");

    let u = User {
        id: new_hex_id(),
        name: "alice".into(),
        domain_id: "default".into(),
        password_hash: Some("$argon2id$x".into()),
        enabled: 1,
        email: None,
        description: None,
        default_project_id: Some(p.id.clone()),
        extra: r#"{"project_id": "x"}"#.into(),
    };
    s.create_user(&u).await.expect("user");
    for role in ["admin", "member", "reader"] {
        s.create_role(&new_hex_id(), role, None).await.expect("role");
    }
    let admin = s.get_role_by_name("admin").await.expect("admin");
    let member = s.get_role_by_name("member").await.expect("member");
    let reader = s.get_role_by_name("reader").await.expect("reader");
    s.add_implied_role(&admin.id, &member.id).await.expect("imply");
    s.add_implied_role(&member.id, &reader.id).await.expect("imply");
    s.add_implied_role(&member.id, &reader.id).await.expect("idempotent");
    s.grant(&u.id, &p.id, &member.id).await.expect("grant");
    s.grant(&u.id, &p.id, &member.id).await.expect("grant twice is fine");
    let mut names: Vec<String> = s
        .effective_roles(&u.id, &Scope::Project(p.id.clone()))
        .await
        .expect("roles")
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    assert_eq!(names, ["member", "reader"], "{backend}");
    assert_eq!(s.user_projects(&u.id).await.expect("projects").len(), 1);
    assert_eq!(s.get_user(&u.id).await.expect("user").extra, r#"{"project_id": "x"}"#, "{backend}");

    // Roles through a group, on a domain, on the system, and inherited to a subproject.
    let g = Group { id: new_hex_id(), name: "ops".into(), domain_id: "default".into(), description: String::new() };
    s.create_group(&g).await.expect("group");
    s.add_group_member(&g.id, &u.id).await.expect("member");
    let grant = |actor_type: &str, actor_id: &str, target_type: &str, target_id: &str, inherited: i64| Grant {
        actor_type: actor_type.into(),
        actor_id: actor_id.into(),
        target_type: target_type.into(),
        target_id: target_id.into(),
        role_id: admin.id.clone(),
        inherited,
    };
    s.add_grant(&grant("group", &g.id, "domain", "default", 0)).await.expect("domain grant");
    let on_domain = s.effective_roles(&u.id, &Scope::Domain("default".into())).await.expect("roles");
    assert_eq!(on_domain.len(), 3, "admin ⇒ member ⇒ reader through the group: {backend}");
    assert!(s.effective_roles(&u.id, &Scope::System).await.expect("roles").is_empty(), "{backend}");
    s.add_grant(&grant("user", &u.id, "system", "all", 0)).await.expect("system grant");
    assert_eq!(s.effective_roles(&u.id, &Scope::System).await.expect("roles").len(), 3, "{backend}");
    let child = Project { id: new_hex_id(), name: "child".into(), parent_id: Some(p.id.clone()), ..p.clone() };
    s.create_project(&child).await.expect("child");
    assert!(s.effective_roles(&u.id, &Scope::Project(child.id.clone())).await.expect("roles").is_empty());
    s.add_grant(&grant("group", &g.id, "project", &p.id, 1)).await.expect("inherited grant");
    let inherited = s.effective_roles(&u.id, &Scope::Project(child.id.clone())).await.expect("roles");
    assert_eq!(inherited.len(), 3, "inherited from the parent: {backend}");
    assert_eq!(s.user_projects(&u.id).await.expect("projects").len(), 2, "{backend}");
    s.remove_group_member(&g.id, &u.id).await.expect("leave");
    assert!(s.effective_roles(&u.id, &Scope::Project(child.id.clone())).await.expect("roles").is_empty());
    s.delete_project(&child.id).await.expect("delete child");
    s.delete_group(&g.id).await.expect("delete group");
    assert!(s.list_grants(Some(("group", &g.id)), None, None, None).await.expect("list").is_empty(), "{backend}");

    let raw = "tok-raw-bearer-secret-0123456789";
    let t = Token {
        id: raw.into(),
        user_id: u.id.clone(),
        project_id: Some(p.id.clone()),
        methods: "password".into(),
        audit_id: "a".into(),
        issued_at: now(),
        expires_at: "2000-01-01T00:00:00.000000Z".into(),
        revoked: 0,
        domain_id: None,
        system_scope: 0,
        app_cred_id: None,
    };
    s.insert_token(&t).await.expect("token");
    // The table keys the token by its hash: no column of any row holds the bearer token.
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT id, user_id, methods, audit_id FROM tokens")
            .fetch_all(&mut *s.conn().await.expect("conn"))
            .await
            .expect("rows");
    assert_eq!(rows.len(), 1, "{backend}");
    assert!(rows.iter().all(|(a, b, c, d)| ![a, b, c, d].iter().any(|v| v.contains(raw))), "{backend}: {rows:?}");
    assert_eq!(rows[0].0, meridian_server::store::identity::token_hash(raw), "{backend}");
    let ctx = s.token_context(raw).await.expect("context").expect("found");
    assert_eq!(ctx.token.id, raw, "{backend}: callers see the token they asked for");
    assert_eq!((ctx.user.name.as_str(), ctx.user_domain.name.as_str()), ("alice", "Default"), "{backend}");
    let (project, domain) = ctx.project.expect("scoped");
    assert_eq!((project.name.as_str(), domain.id.as_str()), ("demo", "default"), "{backend}");
    assert!(s.token_context("nope").await.expect("context").is_none());
    s.revoke_user_tokens(&u.id).await.expect("revoke");
    assert_eq!(s.get_token(raw).await.expect("get").revoked, 1);
    assert_eq!(s.purge_tokens(&now()).await.expect("purge"), 1, "{backend}");

    let f = Flavor {
        id: "1".into(),
        name: "tiny".into(),
        vcpus: 1,
        ram: 512,
        disk: 1,
        ephemeral: 0,
        swap: 0,
        rxtx_factor: 1.0,
        is_public: 1,
        description: None,
        extra_specs: "{}".into(),
    };
    s.create_flavor(&f).await.expect("flavor");
    let big = Flavor { id: "10".into(), name: "big".into(), ram: 8192, disk: 80, ..f.clone() };
    s.create_flavor(&big).await.expect("flavor");
    let private = Flavor { id: "p".into(), name: "private".into(), is_public: 0, ..f.clone() };
    s.create_flavor(&private).await.expect("flavor");
    let filter = FlavorFilter { min_ram: Some(1024), project_id: Some(p.id.clone()), ..Default::default() };
    let ids: Vec<String> = s.list_flavors(&filter).await.expect("list").into_iter().map(|f| f.id).collect();
    assert_eq!(ids, ["10"], "{backend}");
    let all = FlavorFilter { project_id: Some(p.id.clone()), ..Default::default() };
    assert_eq!(s.list_flavors(&all).await.expect("list").len(), 2, "private hidden: {backend}");
    s.add_flavor_access("p", &p.id).await.expect("access");
    assert_eq!(s.list_flavors(&all).await.expect("list").len(), 3, "private granted: {backend}");
    let sorted: Vec<String> =
        s.list_flavors(&FlavorFilter::default()).await.expect("list").into_iter().map(|f| f.id).collect();
    assert_eq!(sorted, ["1", "p", "10"], "flavorid sorts numerically by length first: {backend}");

    // Concurrent extra-spec edits never lose each other's keys.
    let mut edits = Vec::new();
    for i in 0..10 {
        let s = s.clone();
        edits.push(tokio::spawn(async move {
            s.edit_flavor_extra_specs("10", move |m| {
                m.insert(format!("k{i}"), "v".into());
                Ok(())
            })
            .await
        }));
    }
    for e in edits {
        e.await.expect("join").expect("edit");
    }
    assert_eq!(s.get_flavor("10").await.expect("flavor").extra_specs_map().len(), 10, "{backend}");

    let id = s.next_counter("keypair").await.expect("counter");
    assert_eq!(s.next_counter("keypair").await.expect("counter"), id + 1);
    let k = Keypair {
        id,
        user_id: u.id.clone(),
        name: "k".into(),
        kind: "ssh".into(),
        public_key: "ssh-ed25519 AAAA".into(),
        fingerprint: "fp".into(),
        created_at: now(),
    };
    s.create_keypair(&k).await.expect("keypair");
    assert!(matches!(s.create_keypair(&Keypair { id: id + 5, ..k.clone() }).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.count_keypairs(&u.id).await.expect("count"), 1);

    s.set_quota(&p.id, "compute:instances", 3).await.expect("quota");
    s.set_quota(&p.id, "compute:instances", 4).await.expect("quota upsert");
    assert_eq!(s.quota_overrides(&p.id).await.expect("quotas")["compute:instances"], 4);
    s.reset_quotas(&p.id, &["compute:instances"]).await.expect("reset");
    assert!(s.quota_overrides(&p.id).await.expect("quotas").is_empty());

    // Deleting a user cascades to their key pairs, grants and tokens.
    s.delete_user(&u.id).await.expect("delete");
    assert!(matches!(s.get_keypair(&u.id, "k").await, Err(StoreError::NotFound(_))), "{backend}");
    assert!(s.list_grants(Some(("user", &u.id)), None, None, None).await.expect("list").is_empty(), "{backend}");
    assert!(matches!(s.delete_user(&u.id).await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn identity_and_compute_store_on_every_backend() {
    for ts in common::stores().await {
        scenario(&ts.store, ts.name).await;
        ts.drop_db().await;
    }
}
