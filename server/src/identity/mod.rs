//! Keystone v3: version discovery, tokens, the catalog, and the admin API (domains, projects,
//! users, groups, roles, grants, application credentials, services, endpoints, regions).

pub mod app_creds;
pub mod catalog;
mod grants;
mod groups;
mod lockout;
mod project_tags;
mod resources;
pub mod tokens;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
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
        .route("/v3/auth/system", get(tokens::auth_system))
        .route("/v3/auth/catalog", get(tokens::auth_catalog))
        .route("/v3/domains", get(resources::list_domains).post(resources::create_domain))
        .route(
            "/v3/domains/{id}",
            get(resources::get_domain).patch(resources::update_domain).delete(resources::delete_domain),
        )
        .route("/v3/projects", get(resources::list_projects).post(resources::create_project))
        .route(
            "/v3/projects/{id}",
            get(resources::get_project).patch(resources::update_project).delete(resources::delete_project),
        )
        .route("/v3/projects/{id}/tags", get(project_tags::list).put(project_tags::replace).delete(project_tags::clear))
        .route(
            "/v3/projects/{id}/tags/{tag}",
            get(project_tags::check).put(project_tags::add).delete(project_tags::remove),
        )
        .route("/v3/users", get(resources::list_users).post(resources::create_user))
        .route("/v3/users/{id}", get(resources::get_user).patch(resources::update_user).delete(resources::delete_user))
        .route("/v3/users/{id}/projects", get(resources::user_projects))
        .route("/v3/users/{id}/groups", get(groups::list_user_groups))
        .route("/v3/users/{id}/password", post(resources::change_password))
        .route("/v3/users/{id}/application_credentials", get(app_creds::list).post(app_creds::create))
        .route("/v3/users/{uid}/application_credentials/{id}", get(app_creds::get).delete(app_creds::delete))
        .route("/v3/users/{id}/access_rules", get(app_creds::list_rules))
        .route("/v3/users/{uid}/access_rules/{id}", get(app_creds::get_rule).delete(app_creds::delete_rule))
        .route("/v3/groups", get(groups::list_groups).post(groups::create_group))
        .route("/v3/groups/{id}", get(groups::get_group).patch(groups::update_group).delete(groups::delete_group))
        .route("/v3/groups/{id}/users", get(groups::list_group_users))
        .route(
            "/v3/groups/{gid}/users/{uid}",
            put(groups::add_group_user)
                .head(groups::check_group_user)
                .get(groups::check_group_user)
                .delete(groups::remove_group_user),
        )
        .route("/v3/roles", get(resources::list_roles).post(resources::create_role))
        .route("/v3/roles/{id}", get(resources::get_role).patch(resources::update_role).delete(resources::delete_role))
        .merge(grants::router())
        .route("/v3/services", get(catalog::list_services).post(catalog::create_service))
        .route(
            "/v3/services/{id}",
            get(catalog::get_service).patch(catalog::update_service).delete(catalog::delete_service),
        )
        .route("/v3/endpoints", get(catalog::list_endpoints).post(catalog::create_endpoint))
        .route(
            "/v3/endpoints/{id}",
            get(catalog::get_endpoint).patch(catalog::update_endpoint).delete(catalog::delete_endpoint),
        )
        .route("/v3/regions", get(catalog::list_regions).post(catalog::create_region))
        .route(
            "/v3/regions/{id}",
            get(catalog::get_region)
                .put(catalog::put_region)
                .patch(catalog::update_region)
                .delete(catalog::delete_region),
        )
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
        "parent_id": p.parent_id.as_deref().unwrap_or(&p.domain_id),
        "tags": project_tags::stored_tags(&p.tags),
        "options": {},
        "links": {"self": state.url(&format!("identity/v3/projects/{}", p.id))},
    })
}

#[cfg(test)]
mod tests;
