//! Keystone v3: version discovery, tokens, catalog, and the projects/users/roles admin API.

mod resources;
pub mod tokens;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::state::AppState;
use crate::store::identity::{Domain, Project};

/// The id Keystone gives its default domain.
pub const DEFAULT_DOMAIN_ID: &str = "default";
pub const REGION: &str = "RegionOne";

/// Routes under `/identity`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(versions))
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route("/v3/auth/tokens", post(tokens::issue).get(tokens::validate).head(tokens::check).delete(tokens::revoke))
        .route("/v3/auth/projects", get(tokens::auth_projects))
        .route("/v3/auth/domains", get(tokens::auth_domains))
        .route("/v3/auth/catalog", get(tokens::auth_catalog))
        .route("/v3/domains", get(resources::list_domains).post(resources::create_domain))
        .route("/v3/domains/{id}", get(resources::get_domain))
        .route("/v3/projects", get(resources::list_projects).post(resources::create_project))
        .route(
            "/v3/projects/{id}",
            get(resources::get_project).patch(resources::update_project).delete(resources::delete_project),
        )
        .route("/v3/users", get(resources::list_users).post(resources::create_user))
        .route("/v3/users/{id}", get(resources::get_user).patch(resources::update_user).delete(resources::delete_user))
        .route("/v3/users/{id}/projects", get(resources::user_projects))
        .route("/v3/users/{id}/password", post(resources::change_password))
        .route("/v3/roles", get(resources::list_roles).post(resources::create_role))
        .route("/v3/roles/{id}", get(resources::get_role).patch(resources::update_role).delete(resources::delete_role))
        .route("/v3/projects/{pid}/users/{uid}/roles", get(resources::list_grants))
        .route(
            "/v3/projects/{pid}/users/{uid}/roles/{rid}",
            put(resources::grant).head(resources::check_grant).get(resources::check_grant).delete(resources::revoke),
        )
        .route("/v3/role_assignments", get(resources::list_assignments))
        .route("/v3/services", get(resources::list_services))
        .route("/v3/endpoints", get(resources::list_endpoints))
        .route("/v3/regions", get(resources::list_regions))
}

fn version_doc(state: &AppState) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": state.url("identity/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

async fn versions(State(state): State<AppState>) -> impl IntoResponse {
    (StatusCode::MULTIPLE_CHOICES, axum::Json(json!({"versions": {"values": [version_doc(&state)]}})))
}

async fn version(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(json!({"version": version_doc(&state)}))
}

/// One catalog service: (type, name, path under the public URL).
const SERVICES: [(&str, &str, &str); 4] = [
    ("identity", "keystone", "identity"),
    ("compute", "nova", "compute/v2.1"),
    ("image", "glance", "image"),
    ("network", "neutron", "network"),
];
const INTERFACES: [&str; 3] = ["public", "internal", "admin"];

/// Stable ids derived from names, so every replica advertises the same catalog.
fn stable_id(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"/");
    }
    hex::encode(h.finalize())
}

fn endpoints(state: &AppState, service: &str, path: &str) -> Vec<Value> {
    INTERFACES
        .iter()
        .map(|iface| {
            json!({
                "id": stable_id(&["endpoint", service, iface]),
                "interface": iface,
                "region": REGION,
                "region_id": REGION,
                "url": state.url(path),
            })
        })
        .collect()
}

/// The service catalog as it appears in tokens.
pub fn catalog(state: &AppState) -> Value {
    SERVICES
        .iter()
        .map(|(kind, name, path)| {
            json!({
                "id": stable_id(&["service", kind]),
                "type": kind,
                "name": name,
                "endpoints": endpoints(state, kind, path),
            })
        })
        .collect()
}

pub(crate) fn domain_ref(d: &Domain) -> Value {
    json!({"id": d.id, "name": d.name})
}

pub(crate) fn domain_json(state: &AppState, d: &Domain) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "description": d.description,
        "enabled": d.enabled != 0,
        "tags": [],
        "options": {},
        "links": {"self": state.url(&format!("identity/v3/domains/{}", d.id))},
    })
}

pub(crate) fn project_json(state: &AppState, p: &Project) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "domain_id": p.domain_id,
        "description": p.description,
        "enabled": p.enabled != 0,
        "is_domain": false,
        "parent_id": p.domain_id,
        "tags": serde_json::from_str::<Value>(&p.tags).unwrap_or_else(|_| json!([])),
        "options": {},
        "links": {"self": state.url(&format!("identity/v3/projects/{}", p.id))},
    })
}

#[cfg(test)]
mod tests;
