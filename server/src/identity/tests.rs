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
    assert_eq!(types, ["identity", "compute", "image", "network"]);
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
async fn expired_tokens_are_rejected() {
    let app = TestApp::new().await;
    let token = app.token("admin", "adminpw", "admin").await;
    sqlx::query("UPDATE tokens SET expires_at = '2000-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(&token)
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
    assert_eq!(r2.body["token"]["methods"], json!(["token"]));
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

    // A member lists only their own projects.
    let r = app.json(Method::GET, "/identity/v3/projects", &member, Value::Null).await;
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
