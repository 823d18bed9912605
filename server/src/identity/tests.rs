//! Keystone handler tests through the whole router.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::testing::TestApp;

fn password_auth(user: Value, scope: Option<Value>) -> Value {
    let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": user}}});
    if let Some(s) = scope {
        auth["scope"] = s;
    }
    json!({ "auth": auth })
}

async fn post_token(app: &TestApp, body: Value) -> crate::testing::Reply {
    app.call(
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        &[("content-type", "application/json")],
        Body::from(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn discovery_documents() {
    let app = TestApp::new().await;
    let r = app.call(Method::GET, "/identity", None, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(r.body["versions"]["values"][0]["id"], "v3.14");
    let r = app.call(Method::GET, "/identity/v3/", None, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["version"]["links"][0]["href"], "http://meridian.test/identity/v3/");
}

#[tokio::test]
async fn issue_validate_and_revoke() {
    let app = TestApp::new().await;
    let r = post_token(
        &app,
        password_auth(
            json!({"name": "admin", "domain": {"name": "Default"}, "password": "adminpw"}),
            Some(json!({"project": {"name": "admin", "domain": {"name": "Default"}}})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let token = r.headers["x-subject-token"].to_str().expect("hdr").to_string();
    let t = &r.body["token"];
    assert_eq!(t["methods"], json!(["password"]));
    assert_eq!(t["project"]["name"], "admin");
    assert_eq!(t["user"]["domain"]["id"], "default");
    let roles: Vec<&str> = t["roles"].as_array().expect("roles").iter().filter_map(|r| r["name"].as_str()).collect();
    // admin implies member implies reader, as Keystone's bootstrap sets up.
    for want in ["admin", "member", "reader"] {
        assert!(roles.contains(&want), "{roles:?}");
    }
    let catalog = t["catalog"].as_array().expect("catalog");
    let types: Vec<&str> = catalog.iter().filter_map(|s| s["type"].as_str()).collect();
    assert_eq!(types, ["identity", "compute", "image", "network", "block-storage", "volumev3"]);
    assert_eq!(catalog[1]["endpoints"][0]["url"], "http://meridian.test/compute/v2.1");

    // Validation returns the very same body.
    let v = app
        .call(Method::GET, "/identity/v3/auth/tokens", Some(&token), &[("x-subject-token", &token)], Body::empty())
        .await;
    assert_eq!(v.status, StatusCode::OK);
    assert_eq!(v.body, r.body);
    let nocat = app
        .call(
            Method::GET,
            "/identity/v3/auth/tokens?nocatalog",
            Some(&token),
            &[("x-subject-token", &token)],
            Body::empty(),
        )
        .await;
    assert!(nocat.body["token"].get("catalog").is_none());
    let h = app
        .call(Method::HEAD, "/identity/v3/auth/tokens", Some(&token), &[("x-subject-token", &token)], Body::empty())
        .await;
    assert_eq!(h.status, StatusCode::OK);

    // A second token revokes the first; the first is then unknown (404) and unusable (401).
    let other = app.token("admin", "adminpw", "admin").await;
    let d = app
        .call(Method::DELETE, "/identity/v3/auth/tokens", Some(&other), &[("x-subject-token", &token)], Body::empty())
        .await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    let v = app
        .call(Method::GET, "/identity/v3/auth/tokens", Some(&other), &[("x-subject-token", &token)], Body::empty())
        .await;
    assert_eq!(v.status, StatusCode::NOT_FOUND);
    assert_eq!(v.body["error"]["code"], 404);
    let u = app.json(Method::GET, "/identity/v3/auth/projects", &token, Value::Null).await;
    assert_eq!(u.status, StatusCode::UNAUTHORIZED);
    assert!(u.headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn tokens_are_stored_only_as_their_hash() {
    let app = TestApp::new().await;
    let token = app.token("admin", "adminpw", "admin").await;
    let rows: Vec<(String, String, String)> = sqlx::query_as("SELECT id, methods, audit_id FROM tokens")
        .fetch_all(&mut *app.state.store.conn().await.expect("conn"))
        .await
        .expect("rows");
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|(id, m, a)| ![id, m, a].iter().any(|v| v.contains(&token))), "{rows:?}");
    assert!(rows.iter().any(|(id, _, _)| *id == crate::store::identity::token_hash(&token)));
    // The wire is unchanged: the token validates, echoes back as itself, and revokes.
    let other = app.token("admin", "adminpw", "admin").await;
    let v = app
        .call(Method::GET, "/identity/v3/auth/tokens", Some(&other), &[("x-subject-token", &token)], Body::empty())
        .await;
    assert_eq!(v.status, StatusCode::OK);
    assert_eq!(v.headers["x-subject-token"], token.as_str());
    let d = app
        .call(Method::DELETE, "/identity/v3/auth/tokens", Some(&other), &[("x-subject-token", &token)], Body::empty())
        .await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    app.state.tokens.invalidate();
    let r = app.json(Method::GET, "/compute/v2.1/flavors", &token, Value::Null).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_tokens_are_rejected() {
    let app = TestApp::new().await;
    let token = app.token("admin", "adminpw", "admin").await;
    sqlx::query("UPDATE tokens SET expires_at = '2000-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(crate::store::identity::token_hash(&token))
        .execute(&mut *app.state.store.conn().await.expect("conn"))
        .await
        .expect("expire");
    // Changed behind the API's back (as by another replica): seen once the token cache forgets
    // the token (TokenCache::TTL), at once here.
    app.state.tokens.invalidate();
    let other = app.token("admin", "adminpw", "admin").await;
    let v = app
        .call(Method::GET, "/identity/v3/auth/tokens", Some(&other), &[("x-subject-token", &token)], Body::empty())
        .await;
    assert_eq!(v.status, StatusCode::NOT_FOUND);
    let r = app.json(Method::GET, "/compute/v2.1/flavors", &token, Value::Null).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_credentials_and_bad_bodies() {
    let app = TestApp::new().await;
    let wrong = post_token(
        &app,
        password_auth(json!({"name": "admin", "domain": {"id": "default"}, "password": "nope"}), None),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let nobody =
        post_token(&app, password_auth(json!({"name": "ghost", "domain": {"id": "default"}, "password": "x"}), None))
            .await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED);
    let malformed = app
        .call(
            Method::POST,
            "/identity/v3/auth/tokens",
            None,
            &[("content-type", "application/json")],
            Body::from("{\"auth\":"),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.body["error"]["code"], 400);
    let missing = post_token(&app, json!({"auth": {"identity": {"methods": ["password"]}}})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unscoped_then_rescoped_by_token() {
    let app = TestApp::new().await;
    let r = post_token(
        &app,
        password_auth(
            json!({"name": "admin", "domain": {"id": "default"}, "password": "adminpw"}),
            Some(json!("unscoped")),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body["token"].get("project").is_none() && r.body["token"].get("catalog").is_none());
    let unscoped = r.headers["x-subject-token"].to_str().expect("hdr").to_string();
    let projects = app.json(Method::GET, "/identity/v3/auth/projects", &unscoped, Value::Null).await;
    assert_eq!(projects.body["projects"][0]["name"], "admin");
    let pid = projects.body["projects"][0]["id"].as_str().expect("id").to_string();
    // Services need a project scope.
    let f = app.json(Method::GET, "/compute/v2.1/flavors", &unscoped, Value::Null).await;
    assert_eq!(f.status, StatusCode::FORBIDDEN);
    let body = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": unscoped}}, "scope": {"project": {"id": pid}}}});
    let r2 = post_token(&app, body).await;
    assert_eq!(r2.status, StatusCode::CREATED);
    // Keystone adds "token" to the methods the original token was issued with.
    assert_eq!(r2.body["token"]["methods"], json!(["password", "token"]));
    assert_eq!(r2.body["token"]["expires_at"], r.body["token"]["expires_at"]);
    assert_eq!(r2.body["token"]["project"]["id"], pid.as_str());
}

#[tokio::test]
async fn project_user_role_administration() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let member = app.user_in_project("alice", "demo", "member").await;

    // Only admins manage identity.
    let r = app.json(Method::GET, "/identity/v3/users", &member, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.json(Method::POST, "/identity/v3/projects", &member, json!({"project": {"name": "x"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A member may not list projects (Keystone's policy); it lists the ones it can use.
    let r = app.json(Method::GET, "/identity/v3/projects", &member, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.json(Method::GET, "/identity/v3/auth/projects", &member, Value::Null).await;
    let names: Vec<&str> =
        r.body["projects"].as_array().expect("list").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["demo"]);

    // Duplicate project → 409; bad name → 400.
    let r = app.json(Method::POST, "/identity/v3/projects", &admin, json!({"project": {"name": "demo"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app.json(Method::POST, "/identity/v3/projects", &admin, json!({"project": {"name": ""}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Assignments with names, effective roles include implied ones.
    let r = app.json(Method::GET, "/identity/v3/role_assignments?include_names=1", &admin, Value::Null).await;
    let rows = r.body["role_assignments"].as_array().expect("list");
    assert!(rows.iter().any(|a| a["user"]["name"] == "alice"
        && a["role"]["name"] == "member"
        && a["scope"]["project"]["name"] == "demo"));
    let users = app.json(Method::GET, "/identity/v3/users?name=alice", &admin, Value::Null).await;
    let uid = users.body["users"][0]["id"].as_str().expect("uid").to_string();
    let r = app
        .json(Method::GET, &format!("/identity/v3/role_assignments?user.id={uid}&effective"), &member, Value::Null)
        .await;
    let roles: Vec<&str> =
        r.body["role_assignments"].as_array().expect("list").iter().filter_map(|a| a["role"]["id"].as_str()).collect();
    assert_eq!(roles.len(), 2, "member + implied reader");

    // Disabling the user invalidates their tokens at once.
    let r = app
        .json(Method::PATCH, &format!("/identity/v3/users/{uid}"), &admin, json!({"user": {"enabled": false}}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.json(Method::GET, "/compute/v2.1/flavors", &member, Value::Null).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_the_role_ends_access() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let token = app.user_in_project("bob", "p1", "reader").await;
    let ok = app.json(Method::GET, "/compute/v2.1/flavors", &token, Value::Null).await;
    assert_eq!(ok.status, StatusCode::OK);
    let a = app.json(Method::GET, "/identity/v3/role_assignments?include_names", &admin, Value::Null).await;
    let row = a.body["role_assignments"]
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["user"]["name"] == "bob")
        .cloned()
        .expect("row");
    let path = format!(
        "/identity/v3/projects/{}/users/{}/roles/{}",
        row["scope"]["project"]["id"].as_str().expect("p"),
        row["user"]["id"].as_str().expect("u"),
        row["role"]["id"].as_str().expect("r")
    );
    assert_eq!(app.json(Method::DELETE, &path, &admin, Value::Null).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.json(Method::DELETE, &path, &admin, Value::Null).await.status, StatusCode::NOT_FOUND);
    let denied = app.json(Method::GET, "/compute/v2.1/flavors", &token, Value::Null).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
}

// ---- Keystone breadth (issue 12) ----

async fn post_json(app: &TestApp, path: &str, token: &str, body: Value) -> crate::testing::Reply {
    app.json(Method::POST, path, token, body).await
}

fn id_of(r: &crate::testing::Reply, key: &str) -> String {
    r.body[key]["id"].as_str().unwrap_or_else(|| panic!("no {key} id in {}", r.body)).to_string()
}

async fn role_id(app: &TestApp, name: &str) -> String {
    let r = app.json(Method::GET, &format!("/identity/v3/roles?name={name}"), &app.admin_token, Value::Null).await;
    r.body["roles"][0]["id"].as_str().unwrap_or_else(|| panic!("no role {name}")).to_string()
}

#[tokio::test]
async fn bootstrap_roles_and_implications_are_keystones() {
    let app = TestApp::new().await;
    // Bootstrap again: nothing duplicated.
    crate::bootstrap::run(&app.state.store, &app.state.cfg).await.expect("bootstrap twice");
    let r = app.json(Method::GET, "/identity/v3/roles", &app.admin_token, Value::Null).await;
    let mut names: Vec<&str> =
        r.body["roles"].as_array().expect("roles").iter().filter_map(|r| r["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["admin", "manager", "member", "reader", "service"]);
    let admin = role_id(&app, "admin").await;
    let manager = role_id(&app, "manager").await;
    let r = app.json(Method::GET, &format!("/identity/v3/roles/{admin}/implies"), &app.admin_token, Value::Null).await;
    assert_eq!(r.body["role_inference"]["implies"][0]["id"], manager.as_str());
    // A manager's token carries member and reader.
    let token = app.user_in_project("boss", "p1", "manager").await;
    let v = app
        .call(Method::GET, "/identity/v3/auth/tokens", Some(&token), &[("x-subject-token", &token)], Body::empty())
        .await;
    let mut roles: Vec<&str> =
        v.body["token"]["roles"].as_array().expect("roles").iter().filter_map(|r| r["name"].as_str()).collect();
    roles.sort();
    assert_eq!(roles, ["manager", "member", "reader"]);
}

#[tokio::test]
async fn names_are_validated_and_unknown_domains_are_404() {
    let app = TestApp::new().await;
    let long = "a".repeat(65);
    for (path, body) in [
        ("/identity/v3/domains", json!({"domain": {"name": long}})),
        ("/identity/v3/projects", json!({"project": {"name": long}})),
        ("/identity/v3/groups", json!({"group": {"name": long}})),
    ] {
        let r = post_json(&app, path, &app.admin_token, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
    }
    let r =
        post_json(&app, "/identity/v3/users", &app.admin_token, json!({"user": {"name": "u", "domain_id": "nope"}}))
            .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Unknown attributes of a user are kept and returned (Keystone's extra attributes).
    let r = post_json(&app, "/identity/v3/users", &app.admin_token, json!({"user": {"name": "u", "project_id": "p"}}))
        .await;
    assert_eq!(r.body["user"]["project_id"], "p");
}

#[tokio::test]
async fn domains_update_and_delete_only_when_disabled() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let r = post_json(&app, "/identity/v3/domains", &admin, json!({"domain": {"name": "d1"}})).await;
    let did = id_of(&r, "domain");
    let r = post_json(&app, "/identity/v3/users", &admin, json!({"user": {"name": "x", "domain_id": did}})).await;
    let uid = id_of(&r, "user");
    let r = post_json(&app, "/identity/v3/groups", &admin, json!({"group": {"name": "g", "domain_id": did}})).await;
    let gid = id_of(&r, "group");
    let r = app.json(Method::DELETE, &format!("/identity/v3/domains/{did}"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "enabled domains are not deleted");
    let r = app
        .json(
            Method::PATCH,
            &format!("/identity/v3/domains/{did}"),
            &admin,
            json!({"domain": {"enabled": false, "name": "d2"}}),
        )
        .await;
    assert_eq!((r.body["domain"]["enabled"].clone(), r.body["domain"]["name"].clone()), (json!(false), json!("d2")));
    let r = app.json(Method::GET, "/identity/v3/domains?enabled=false", &admin, Value::Null).await;
    assert_eq!(r.body["domains"].as_array().expect("list").len(), 1);
    let r = app.json(Method::DELETE, &format!("/identity/v3/domains/{did}"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    for path in [
        format!("/identity/v3/users/{uid}"),
        format!("/identity/v3/groups/{gid}"),
        format!("/identity/v3/domains/{did}"),
    ] {
        assert_eq!(app.json(Method::GET, &path, &admin, Value::Null).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = app.json(Method::DELETE, "/identity/v3/domains/default", &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn group_roles_count_in_tokens_and_effective_assignments() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let _ = app.user_in_project("alice", "p1", "reader").await;
    let alice =
        app.json(Method::GET, "/identity/v3/users?name=alice", &admin, Value::Null).await.body["users"][0]["id"]
            .as_str()
            .expect("alice")
            .to_string();
    let r = post_json(&app, "/identity/v3/projects", &admin, json!({"project": {"name": "p2"}})).await;
    let p2 = id_of(&r, "project");
    let r = post_json(&app, "/identity/v3/groups", &admin, json!({"group": {"name": "devs"}})).await;
    let gid = id_of(&r, "group");
    let member = role_id(&app, "member").await;
    for path in [
        format!("/identity/v3/groups/{gid}/users/{alice}"),
        format!("/identity/v3/projects/{p2}/groups/{gid}/roles/{member}"),
    ] {
        assert_eq!(app.json(Method::PUT, &path, &admin, Value::Null).await.status, StatusCode::NO_CONTENT, "{path}");
    }
    let r = app.json(Method::GET, &format!("/identity/v3/users/{alice}/groups"), &admin, Value::Null).await;
    assert_eq!(r.body["groups"][0]["id"], gid.as_str());
    // The group's role lets alice scope to p2, with member ⇒ reader.
    let token = app.token("alice", "pw", "p2").await;
    let v = app
        .call(Method::GET, "/identity/v3/auth/tokens", Some(&token), &[("x-subject-token", &token)], Body::empty())
        .await;
    assert_eq!(v.body["token"]["roles"].as_array().expect("roles").len(), 2);
    let q = format!("/identity/v3/role_assignments?effective&user.id={alice}&scope.project.id={p2}");
    let r = app.json(Method::GET, &q, &admin, Value::Null).await;
    let a = r.body["role_assignments"].as_array().expect("list");
    assert_eq!(a.len(), 2, "{}", r.body);
    assert!(a[0]["links"]["membership"].as_str().is_some_and(|m| m.contains(&gid)));
    // Not effective: the group's own grant.
    let r = app.json(Method::GET, &format!("/identity/v3/role_assignments?group.id={gid}"), &admin, Value::Null).await;
    assert_eq!(r.body["role_assignments"][0]["group"]["id"], gid.as_str());
    // Leaving the group ends the access.
    let r = app.json(Method::DELETE, &format!("/identity/v3/groups/{gid}/users/{alice}"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.json(Method::GET, "/identity/v3/auth/projects", &token, Value::Null).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn domain_and_system_scoped_tokens() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let _ = app.user_in_project("bob", "p1", "member").await;
    let bob = app.json(Method::GET, "/identity/v3/users?name=bob", &admin, Value::Null).await.body["users"][0]["id"]
        .as_str()
        .expect("bob")
        .to_string();
    let reader = role_id(&app, "reader").await;
    let admin_role = role_id(&app, "admin").await;
    let user = json!({"name": "bob", "domain": {"id": "default"}, "password": "pw"});
    // No role on the domain yet: no domain token.
    let r = post_token(&app, password_auth(user.clone(), Some(json!({"domain": {"id": "default"}})))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .json(Method::PUT, &format!("/identity/v3/domains/default/users/{bob}/roles/{reader}"), &admin, Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = post_token(&app, password_auth(user.clone(), Some(json!({"domain": {"name": "Default"}})))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["token"]["domain"]["id"], "default");
    assert!(r.body["token"].get("project").is_none());
    let dtoken = r.headers["x-subject-token"].to_str().expect("hdr").to_string();
    let r = app.json(Method::GET, "/identity/v3/auth/domains", &dtoken, Value::Null).await;
    assert_eq!(r.body["domains"][0]["id"], "default");
    // A domain reader is no cloud admin.
    let r = app.json(Method::GET, "/identity/v3/users", &dtoken, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // System scope: admin on the system is a cloud admin.
    let sys = json!({"system": {"all": true}});
    let r = post_token(&app, password_auth(user.clone(), Some(sys.clone()))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .json(Method::PUT, &format!("/identity/v3/system/users/{bob}/roles/{admin_role}"), &admin, Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.json(Method::GET, &format!("/identity/v3/system/users/{bob}/roles"), &admin, Value::Null).await;
    assert_eq!(r.body["roles"][0]["id"], admin_role.as_str());
    let r = post_token(&app, password_auth(user, Some(sys))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["token"]["system"], json!({"all": true}));
    assert!(r.body["token"]["catalog"].as_array().is_some_and(|c| !c.is_empty()));
    let stoken = r.headers["x-subject-token"].to_str().expect("hdr").to_string();
    let r = app.json(Method::GET, "/identity/v3/users", &stoken, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.json(Method::GET, "/identity/v3/auth/system", &stoken, Value::Null).await;
    assert_eq!(r.body["system"], json!([{"all": true}]));
}

#[tokio::test]
async fn rescoping_keeps_the_methods() {
    let app = TestApp::new().await;
    let r = post_token(
        &app,
        password_auth(
            json!({"name": "admin", "domain": {"id": "default"}, "password": "adminpw"}),
            Some(json!("unscoped")),
        ),
    )
    .await;
    let unscoped = r.headers["x-subject-token"].to_str().expect("hdr").to_string();
    let body = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": unscoped}},
                               "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
    let r = post_token(&app, body).await;
    assert_eq!(r.body["token"]["methods"], json!(["password", "token"]));
}

#[tokio::test]
async fn application_credentials_authenticate_with_their_roles() {
    let app = TestApp::new().await;
    let token = app.user_in_project("carol", "p1", "member").await;
    let v = app
        .call(Method::GET, "/identity/v3/auth/tokens", Some(&token), &[("x-subject-token", &token)], Body::empty())
        .await;
    let uid = v.body["token"]["user"]["id"].as_str().expect("uid").to_string();
    let pid = v.body["token"]["project"]["id"].as_str().expect("pid").to_string();
    let base = format!("/identity/v3/users/{uid}/application_credentials");
    // Only roles the user holds can be delegated.
    let r =
        post_json(&app, &base, &token, json!({"application_credential": {"name": "x", "roles": [{"name": "admin"}]}}))
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let rules = json!([{"service": "compute", "path": "/v2.1/servers/*/ips", "method": "GET"}]);
    let r = post_json(
        &app,
        &base,
        &token,
        json!({"application_credential": {"name": "ci", "roles": [{"name": "reader"}], "access_rules": rules,
               "expires_at": "2999-01-02T03:04:05.123456"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let cred = r.body["application_credential"].clone();
    let secret = cred["secret"].as_str().expect("secret shown once").to_string();
    assert_eq!(cred["expires_at"], "2999-01-02T03:04:05.123456");
    let id = cred["id"].as_str().expect("id").to_string();
    let r = app.json(Method::GET, &format!("{base}/{id}"), &token, Value::Null).await;
    assert!(r.body["application_credential"].get("secret").is_none());
    let stored: String = sqlx::query_scalar("SELECT secret_hash FROM application_credentials WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut *app.state.store.conn().await.expect("conn"))
        .await
        .expect("hash");
    assert!(stored.starts_with("$argon2id$"), "stored hashed");

    // By id, and by name + user: a token on the credential's project with only its roles.
    for identity in [
        json!({"id": id, "secret": secret}),
        json!({"name": "ci", "user": {"name": "carol", "domain": {"id": "default"}}, "secret": secret}),
    ] {
        let body =
            json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": identity}}});
        let r = post_token(&app, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["token"]["project"]["id"], pid.as_str());
        assert_eq!(r.body["token"]["methods"], json!(["application_credential"]));
        let roles: Vec<&str> =
            r.body["token"]["roles"].as_array().expect("roles").iter().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(roles, ["reader"]);
    }
    let wrong = json!({"auth": {"identity": {"methods": ["application_credential"],
                                             "application_credential": {"id": id, "secret": "nope"}}}});
    assert_eq!(post_token(&app, wrong).await.status, StatusCode::UNAUTHORIZED);

    // Access rules are the user's; one in use cannot be deleted.
    let r = app.json(Method::GET, &format!("/identity/v3/users/{uid}/access_rules"), &token, Value::Null).await;
    let rule = r.body["access_rules"][0]["id"].as_str().expect("rule").to_string();
    let rule_path = format!("/identity/v3/users/{uid}/access_rules/{rule}");
    assert_eq!(app.json(Method::DELETE, &rule_path, &token, Value::Null).await.status, StatusCode::FORBIDDEN);
    let r = app.json(Method::DELETE, &format!("{base}/{id}"), &token, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(app.json(Method::DELETE, &rule_path, &token, Value::Null).await.status, StatusCode::NO_CONTENT);
    let body = json!({"auth": {"identity": {"methods": ["application_credential"],
                                            "application_credential": {"id": id, "secret": secret}}}});
    assert_eq!(post_token(&app, body).await.status, StatusCode::UNAUTHORIZED, "deleted");
}

#[tokio::test]
async fn registered_services_join_the_catalog() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let r = post_json(&app, "/identity/v3/services", &admin, json!({"service": {"type": "dns", "name": "designate"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let sid = id_of(&r, "service");
    let bad =
        json!({"endpoint": {"service_id": sid, "interface": "public", "url": "http://dns:9001", "enabled": "True"}});
    assert_eq!(post_json(&app, "/identity/v3/endpoints", &admin, bad).await.status, StatusCode::BAD_REQUEST);
    let ep = json!({"endpoint": {"service_id": sid, "interface": "public", "url": "http://dns:9001/$(project_id)s", "region": "RegionTwo"}});
    let r = post_json(&app, "/identity/v3/endpoints", &admin, ep).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let eid = id_of(&r, "endpoint");
    // The named region was created.
    let r = app.json(Method::GET, "/identity/v3/regions/RegionTwo", &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.json(Method::GET, &format!("/identity/v3/endpoints?service_id={sid}"), &admin, Value::Null).await;
    assert_eq!(r.body["endpoints"].as_array().expect("list").len(), 1);

    let r = app.json(Method::GET, "/identity/v3/auth/catalog", &admin, Value::Null).await;
    let catalog = r.body["catalog"].as_array().expect("catalog").clone();
    let dns = catalog.iter().find(|s| s["type"] == "dns").expect("dns in the catalog");
    let v = app
        .call(Method::GET, "/identity/v3/auth/tokens", Some(&admin), &[("x-subject-token", &admin)], Body::empty())
        .await;
    let pid = v.body["token"]["project"]["id"].as_str().expect("pid");
    assert_eq!(dns["endpoints"][0]["url"], format!("http://dns:9001/{pid}").as_str());
    // Meridian's own endpoints are stored and listed too, with their ids unchanged.
    let r = app.json(Method::GET, "/identity/v3/services?type=compute", &admin, Value::Null).await;
    assert_eq!(r.body["services"].as_array().expect("list").len(), 1);

    let r = app
        .json(Method::PATCH, &format!("/identity/v3/endpoints/{eid}"), &admin, json!({"endpoint": {"enabled": false}}))
        .await;
    assert_eq!(r.body["endpoint"]["enabled"], false);
    let r = app.json(Method::DELETE, &format!("/identity/v3/services/{sid}"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.json(Method::GET, &format!("/identity/v3/endpoints/{eid}"), &admin, Value::Null).await.status,
        StatusCode::NOT_FOUND
    );
    let r = app.json(Method::DELETE, "/identity/v3/regions/RegionTwo", &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn project_tags_are_stored_listed_and_removed() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let r =
        post_json(&app, "/identity/v3/projects", &admin, json!({"project": {"name": "tagged", "tags": [" a "]}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Stripped, as Keystone stores them.
    assert_eq!(r.body["project"]["tags"], json!(["a"]));
    let pid = id_of(&r, "project");
    let tags = format!("/identity/v3/projects/{pid}/tags");

    // Add one: 201, no body, a Location naming the tag.
    let r = app.json(Method::PUT, &format!("{tags}/b%20c"), &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.bytes.is_empty());
    assert_eq!(r.headers["location"], format!("http://meridian.test/{}/b%20c", tags.trim_start_matches('/')).as_str());
    for (method, tag, want) in [
        (Method::GET, "b%20c", StatusCode::NO_CONTENT),
        (Method::HEAD, "a", StatusCode::NO_CONTENT),
        (Method::GET, "zzz", StatusCode::NOT_FOUND),
    ] {
        let r = app.json(method, &format!("{tags}/{tag}"), &admin, Value::Null).await;
        assert_eq!(r.status, want, "{tag}");
    }
    // Adding a tag it already has breaks Keystone's uniqueness rule.
    let r = app.json(Method::PUT, &format!("{tags}/a"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = app.json(Method::GET, &tags, &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["tags"], json!(["a", "b c"]));
    assert_eq!(r.body["links"]["self"], format!("http://meridian.test{tags}").as_str());

    // Replace all; the project body shows the same list.
    let r = app.json(Method::PUT, &tags, &admin, json!({"tags": ["x", "y", "z"]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["tags"], json!(["x", "y", "z"]));
    let r = app.json(Method::GET, &format!("/identity/v3/projects/{pid}"), &admin, Value::Null).await;
    assert_eq!(r.body["project"]["tags"], json!(["x", "y", "z"]));

    // A PATCH that does not name tags keeps them; one that does replaces them.
    let r = app
        .json(Method::PATCH, &format!("/identity/v3/projects/{pid}"), &admin, json!({"project": {"description": "d"}}))
        .await;
    assert_eq!(r.body["project"]["tags"], json!(["x", "y", "z"]));
    let r = app
        .json(Method::PATCH, &format!("/identity/v3/projects/{pid}"), &admin, json!({"project": {"tags": ["x", "w"]}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["project"]["tags"], json!(["x", "w"]));

    // Delete one, then a missing one, then all.
    let r = app.json(Method::DELETE, &format!("{tags}/x"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.json(Method::DELETE, &format!("{tags}/x"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.json(Method::GET, &tags, &admin, Value::Null).await;
    assert_eq!(r.body["tags"], json!(["w"]));
    let r = app.json(Method::DELETE, &tags, &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.json(Method::GET, &tags, &admin, Value::Null).await;
    assert_eq!(r.body["tags"], json!([]));

    // An unknown project is a 404 for an admin.
    let r = app.json(Method::GET, "/identity/v3/projects/nope/tags", &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn project_tags_are_validated_as_keystone_does() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let r = post_json(&app, "/identity/v3/projects", &admin, json!({"project": {"name": "v"}})).await;
    let tags = format!("/identity/v3/projects/{}/tags", id_of(&r, "project"));
    let too_many: Vec<String> = (0..81).map(|i| format!("t{i}")).collect();
    let eighty = &too_many[..80];
    for bad in [
        json!({"tags": too_many}),
        json!({"tags": ["a/b"]}),
        json!({"tags": ["a,b"]}),
        json!({"tags": ["x".repeat(256)]}),
        json!({"tags": [""]}),
        json!({"tags": ["d", "d"]}),
        json!({"tags": "notalist"}),
        json!({}),
    ] {
        let r = app.json(Method::PUT, &tags, &admin, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = app.json(Method::PUT, &tags, &admin, json!({"tags": ["x".repeat(255)]})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.json(Method::PUT, &format!("{tags}/a%2Cb"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.json(Method::PUT, &format!("{tags}/a%2Fb"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // 80 is the limit: the 81st single add is refused and nothing changes.
    let r = app.json(Method::PUT, &tags, &admin, json!({ "tags": eighty })).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.json(Method::PUT, &format!("{tags}/one-more"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.json(Method::GET, &tags, &admin, Value::Null).await;
    assert_eq!(r.body["tags"].as_array().map(Vec::len), Some(80));
    // The project body is held to the same rules.
    let r = post_json(&app, "/identity/v3/projects", &admin, json!({"project": {"name": "w", "tags": ["a/b"]}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn project_tags_policy_follows_keystone_defaults() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let member = app.user_in_project("mem", "mine", "member").await;
    let reader = app.user_in_project("rdr", "mine", "reader").await;
    let r = app.json(Method::GET, "/identity/v3/projects?name=mine", &admin, Value::Null).await;
    let mine = r.body["projects"][0]["id"].as_str().expect("mine").to_string();
    let r =
        post_json(&app, "/identity/v3/projects", &admin, json!({"project": {"name": "other", "tags": ["o"]}})).await;
    let other = id_of(&r, "project");
    let r = app.json(Method::PUT, &format!("/identity/v3/projects/{mine}/tags/t"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::CREATED);

    for token in [&member, &reader] {
        // Any role on the project may read its tags...
        let r = app.json(Method::GET, &format!("/identity/v3/projects/{mine}/tags"), token, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["tags"], json!(["t"]));
        let r = app.json(Method::GET, &format!("/identity/v3/projects/{mine}/tags/t"), token, Value::Null).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        // ...but not another project's, nor change any.
        let r = app.json(Method::GET, &format!("/identity/v3/projects/{other}/tags"), token, Value::Null).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app.json(Method::PUT, &format!("/identity/v3/projects/{mine}/tags/u"), token, Value::Null).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app.json(Method::PUT, &format!("/identity/v3/projects/{mine}/tags"), token, json!({"tags": []})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app.json(Method::DELETE, &format!("/identity/v3/projects/{mine}/tags/t"), token, Value::Null).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app.json(Method::DELETE, &format!("/identity/v3/projects/{mine}/tags"), token, Value::Null).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        // A missing project is no oracle: 403 as for an existing one.
        let r = app.json(Method::GET, "/identity/v3/projects/nope/tags", token, Value::Null).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn projects_are_filtered_by_tags() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    for (name, tags) in
        [("pa", json!(["a"])), ("pab", json!(["a", "b"])), ("pbc", json!(["b", "c"])), ("pn", json!([]))]
    {
        let r =
            post_json(&app, "/identity/v3/projects", &admin, json!({"project": {"name": name, "tags": tags}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let names = |r: &crate::testing::Reply| -> Vec<String> {
        let mut v: Vec<String> = r.body["projects"]
            .as_array()
            .expect("projects")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .filter(|n| n.starts_with('p') && n.len() <= 3)
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    for (query, want) in [
        ("tags=a,b", vec!["pab"]),
        ("tags=b", vec!["pab", "pbc"]),
        ("tags-any=a,c", vec!["pa", "pab", "pbc"]),
        ("not-tags=a,b", vec!["pa", "pbc", "pn"]),
        ("not-tags-any=a,c", vec!["pn"]),
        ("tags-any=b&not-tags=a", vec!["pbc"]),
        ("tags=a&name=pa", vec!["pa"]),
    ] {
        let r = app.json(Method::GET, &format!("/identity/v3/projects?{query}"), &admin, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(names(&r), want, "{query}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_in_keystone_format() {
    let app = TestApp::new().await;
    // Over axum's 2 MB default (once a 400) and between our 1 MiB limit and it.
    for len in [3 << 20, (3 << 20) / 2] {
        let body = json!({ "pad": "x".repeat(len) }).to_string();
        let r = app
            .call(
                Method::POST,
                "/identity/v3/auth/tokens",
                None,
                &[("content-type", "application/json")],
                Body::from(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{len}: {}", r.body);
        assert_eq!(r.body["error"]["code"], 413, "{}", r.body);
        assert_eq!(r.body["error"]["message"], "Request is too large.");
    }
}
