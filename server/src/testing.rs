//! Handler-test support: a real store in a temp dir, the full router, and tokens for an admin
//! and for members/readers of fresh projects. Requests go through `oneshot`, no socket.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::config::CommonArgs;
use crate::state::AppState;
use crate::store::Store;
use crate::store::instances::Instance;

pub struct TestApp {
    pub state: AppState,
    pub admin_token: String,
    _dir: tempfile::TempDir,
}

/// A response, decoded.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with_config(|_| {}).await
    }

    /// A test app whose configuration `adjust` changes first (limits, lockout, …).
    pub async fn with_config(adjust: impl FnOnce(&mut crate::config::Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = CommonArgs {
            data_dir: Some(dir.path().to_path_buf()),
            admin_password: Some("adminpw".into()),
            public_url: Some("http://meridian.test".into()),
            ..Default::default()
        };
        let mut cfg = args.resolve().expect("config");
        adjust(&mut cfg);
        let store = Store::open(&cfg.database_url).await.expect("store");
        crate::bootstrap::run(&store, &cfg).await.expect("bootstrap");
        let state = AppState::new(store, cfg);
        let mut app = TestApp { state, admin_token: String::new(), _dir: dir };
        app.admin_token = app.token("admin", "adminpw", "admin").await;
        app
    }

    /// Sends one request through the whole application.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = crate::app(self.state.clone()).oneshot(req.body(body).expect("request")).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body, bytes }
    }

    /// JSON request helper: `body` of `Value::Null` sends no body.
    pub async fn json(&self, method: Method, path: &str, token: &str, body: Value) -> Reply {
        let (b, h): (Body, &[(&str, &str)]) = if body.is_null() {
            (Body::empty(), &[])
        } else {
            (Body::from(body.to_string()), &[("content-type", "application/json")])
        };
        self.call(method, path, Some(token), h, b).await
    }

    /// A project-scoped token by password.
    pub async fn token(&self, user: &str, password: &str, project: &str) -> String {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }});
        let r = self
            .call(
                Method::POST,
                "/identity/v3/auth/tokens",
                None,
                &[("content-type", "application/json")],
                Body::from(body.to_string()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "token for {user}: {}", r.body);
        r.headers["x-subject-token"].to_str().expect("token header").to_string()
    }

    /// An active public raw image (4 KiB of data, `min_ram` as given) and a shared network
    /// with a /24 subnet, made by the admin: what a server test boots from. (image, network)
    pub async fn image_and_network(&self, min_ram: i64) -> (String, String) {
        let t = self.admin_token.clone();
        let body = json!({"name": "img", "disk_format": "raw", "container_format": "bare", "visibility": "public", "min_ram": min_ram});
        let img = self.json(Method::POST, "/image/v2/images", &t, body).await;
        let image = img.body["id"].as_str().expect("image id").to_string();
        let up = self
            .call(
                Method::PUT,
                &format!("/image/v2/images/{image}/file"),
                Some(&t),
                &[("content-type", "application/octet-stream")],
                Body::from(vec![7u8; 4096]),
            )
            .await;
        assert_eq!(up.status, StatusCode::NO_CONTENT);
        let net = self
            .json(Method::POST, "/network/v2.0/networks", &t, json!({"network": {"name": "n", "shared": true}}))
            .await;
        let network = net.body["network"]["id"].as_str().expect("net id").to_string();
        let subnet = json!({"subnet": {"network_id": network, "cidr": "10.9.0.0/24", "ip_version": 4}});
        let sub = self.json(Method::POST, "/network/v2.0/subnets", &t, subnet).await;
        assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
        (image, network)
    }

    /// Creates project `project` (if needed) and user `user` holding `role` on it; returns the
    /// user's project-scoped token.
    pub async fn user_in_project(&self, user: &str, project: &str, role: &str) -> String {
        let admin = self.admin_token.clone();
        let existing =
            self.json(Method::GET, &format!("/identity/v3/projects?name={project}"), &admin, Value::Null).await;
        let pid = match existing.body["projects"].as_array().and_then(|a| a.first()) {
            Some(p) => p["id"].as_str().expect("id").to_string(),
            None => {
                let r = self
                    .json(Method::POST, "/identity/v3/projects", &admin, json!({"project": {"name": project}}))
                    .await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                r.body["project"]["id"].as_str().expect("id").to_string()
            }
        };
        let r = self
            .json(Method::POST, "/identity/v3/users", &admin, json!({"user": {"name": user, "password": "pw"}}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let uid = r.body["user"]["id"].as_str().expect("id").to_string();
        let roles = self.json(Method::GET, &format!("/identity/v3/roles?name={role}"), &admin, Value::Null).await;
        let rid = roles.body["roles"][0]["id"].as_str().expect("role").to_string();
        let r = self
            .json(Method::PUT, &format!("/identity/v3/projects/{pid}/users/{uid}/roles/{rid}"), &admin, Value::Null)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        self.token(user, "pw", project).await
    }
}

/// An ACTIVE instance row (project `p1`, user `u1`, flavor m1.nano, no host) to store directly;
/// a test changes what it needs with `..instance(id)`. `server/tests/common` has the same for the
/// store tests, which cannot see this `cfg(test)` module.
pub fn instance(id: &str) -> Instance {
    let ts = crate::store::now();
    Instance {
        id: id.into(),
        name: id.into(),
        hostname: id.into(),
        description: None,
        project_id: "p1".into(),
        user_id: "u1".into(),
        flavor_id: "42".into(),
        flavor: r#"{"id":"42","name":"m1.nano","vcpus":1,"ram":128,"disk":1,"ephemeral":0,"swap":0}"#.into(),
        image_id: "img".into(),
        key_name: None,
        key_data: None,
        user_data: None,
        metadata: "{}".into(),
        tags: "[]".into(),
        availability_zone: None,
        config_drive: String::new(),
        reservation_id: "r-1".into(),
        launch_index: 0,
        host_id: None,
        alternates: "[]".into(),
        tried_hosts: "[]".into(),
        claimed: 0,
        requested_networks: "[]".into(),
        owned_ports: "[]".into(),
        vm_state: "active".into(),
        task_state: None,
        power_state: 1,
        fault: None,
        locked: 0,
        build_deadline: None,
        created_at: ts.clone(),
        updated_at: ts,
        launched_at: None,
        terminated_at: None,
        deleted: 0,
        access_ip_v4: None,
        access_ip_v6: None,
    }
}
