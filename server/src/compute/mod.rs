//! Nova v2.1: version discovery, microversions, flavors, key pairs, quotas, limits and
//! availability zones.

pub mod agents;
mod aggregates;
mod audit_log;
pub(crate) mod bdm;
pub mod conductor;
pub mod consoles;
mod evacuate;
mod events;
mod extensions;
mod external_events;
mod extras;
mod flavors;
mod hosts;
mod images;
mod interfaces;
mod keypairs;
pub(crate) mod lifecycle;
mod live_migration;
pub mod metadata;
pub mod microversion;
pub(crate) mod migrations;
mod os_hosts;
mod os_networks;
mod os_security_groups;
pub mod port_filters;
mod quotas;
pub(crate) mod rebuild;
pub mod scheduler;
mod security_groups;
pub(crate) mod server_groups;
pub(crate) mod server_images;
mod server_view;
#[cfg(test)]
mod server_view_reference;
pub(crate) mod servers;
pub mod states;
mod tags;
mod volume_attachments;
pub(crate) mod volume_snapshots;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

pub use microversion::ApiVersion;

use crate::state::AppState;

/// Routes under `/compute`: the v2.1 API, and the same API at `/v2` for v2.0 clients (as
/// Nova's v2.0 compatibility endpoint: served by the v2.1 code at the base microversion).
pub fn router(_state: AppState) -> Router<AppState> {
    let v21 = api().route("/", get(version)).layer(from_fn(microversion::negotiate));
    let v20 = api().route("/", get(version_v20)).layer(from_fn(microversion::negotiate)).layer(from_fn(legacy_v2));
    Router::new().route("/", get(versions)).nest("/v2.1", v21).nest("/v2", v20)
}

/// Every route of the API but its version document.
fn api() -> Router<AppState> {
    Router::new()
        .route("/extensions", get(extensions::list))
        .route("/extensions/{alias}", get(extensions::show))
        .route("/images", get(images::list))
        .route("/images/detail", get(images::list_detail))
        .route("/images/{id}", get(images::show).delete(images::delete))
        .route(
            "/images/{id}/metadata",
            get(images::list_metadata).post(images::merge_metadata).put(images::replace_metadata),
        )
        .route(
            "/images/{id}/metadata/{key}",
            get(images::show_metadata_item).put(images::put_metadata_item).delete(images::delete_metadata_item),
        )
        .route("/flavors", get(flavors::list).post(flavors::create))
        .route("/flavors/detail", get(flavors::list_detail))
        .route("/flavors/{id}", get(flavors::show).put(flavors::update).delete(flavors::delete))
        .route("/flavors/{id}/os-extra_specs", get(flavors::list_specs).post(flavors::create_specs))
        .route(
            "/flavors/{id}/os-extra_specs/{key}",
            get(flavors::show_spec).put(flavors::update_spec).delete(flavors::delete_spec),
        )
        .route("/flavors/{id}/os-flavor-access", get(flavors::list_access))
        .route("/flavors/{id}/action", post(flavors::action))
        .route("/os-keypairs", get(keypairs::list).post(keypairs::create))
        .route("/os-keypairs/{name}", get(keypairs::show).delete(keypairs::delete))
        .route("/os-quota-sets/{project_id}", get(quotas::show).put(quotas::update).delete(quotas::reset))
        .route("/os-quota-sets/{project_id}/detail", get(quotas::detail))
        .route("/os-quota-sets/{project_id}/defaults", get(quotas::defaults))
        .route("/limits", get(quotas::limits))
        .route("/os-availability-zone", get(aggregates::availability_zones))
        .route("/os-availability-zone/detail", get(aggregates::availability_zones_detail))
        .route("/servers", get(servers::list).post(servers::create))
        .route("/servers/detail", get(servers::list_detail))
        .route("/os-meridian-events", get(events::stream))
        .route("/servers/{id}", get(servers::show).put(servers::update).delete(servers::delete))
        .route("/servers/{id}/action", post(servers::action))
        .route("/servers/{id}/tags", get(tags::list).put(tags::replace).delete(tags::clear))
        .route("/servers/{id}/tags/{tag}", get(tags::show).put(tags::add).delete(tags::remove))
        .route("/servers/{id}/os-security-groups", get(security_groups::list_for_server))
        .route(
            "/os-security-groups",
            get(os_security_groups::list).post(os_security_groups::create).delete(os_security_groups::delete_none),
        )
        .route(
            "/os-security-groups/{id}",
            get(os_security_groups::show).put(os_security_groups::update).delete(os_security_groups::delete),
        )
        .route("/os-security-group-rules", post(os_security_groups::create_rule))
        .route("/os-security-group-rules/{id}", delete(os_security_groups::delete_rule))
        .route("/servers/{id}/remote-consoles", post(consoles::create))
        .route("/os-console-auth-tokens/{token}", get(consoles::show_token))
        .route("/servers/{id}/ips", get(servers::list_ips))
        .route("/servers/{id}/ips/{network}", get(servers::show_ips))
        .route(
            "/servers/{id}/metadata",
            get(servers::list_metadata).post(servers::merge_metadata).put(servers::replace_metadata),
        )
        .route(
            "/servers/{id}/metadata/{key}",
            get(servers::show_metadata_item).put(servers::put_metadata_item).delete(servers::delete_metadata_item),
        )
        .route("/os-migrations", get(migrations::list))
        .route("/servers/{id}/migrations", get(migrations::server_list))
        .route("/servers/{id}/migrations/{migration_id}", get(migrations::server_show).delete(live_migration::abort))
        .route("/servers/{id}/migrations/{migration_id}/action", post(live_migration::force_complete))
        .route("/servers/{id}/os-instance-actions", get(hosts::list_actions))
        .route("/servers/{id}/os-instance-actions/{request_id}", get(hosts::show_action))
        .route("/servers/{id}/os-meridian-timeline", get(hosts::timeline))
        .route("/servers/{id}/os-volume_attachments", get(volume_attachments::list).post(volume_attachments::create))
        .route(
            "/servers/{id}/os-volume_attachments/{volume_id}",
            get(volume_attachments::show).delete(volume_attachments::delete),
        )
        .route("/os-hypervisors", get(hosts::list_hypervisors))
        .route("/os-hypervisors/detail", get(hosts::list_hypervisors_detail))
        .route("/os-hypervisors/statistics", get(hosts::hypervisor_statistics))
        .route("/os-hypervisors/{id}", get(hosts::show_hypervisor))
        .route("/os-hypervisors/{id}/uptime", get(hosts::hypervisor_uptime))
        .route("/os-hypervisors/{id}/search", get(hosts::search_hypervisors))
        .route("/os-hypervisors/{id}/servers", get(hosts::hypervisor_servers))
        .route("/os-services", get(hosts::list_services))
        .route("/os-aggregates", get(aggregates::list).post(aggregates::create))
        .route("/os-aggregates/{id}", get(aggregates::show).put(aggregates::update).delete(aggregates::delete))
        .route("/os-aggregates/{id}/action", post(aggregates::action))
        .route("/os-server-groups", get(server_groups::list).post(server_groups::create))
        .route("/os-server-groups/{id}", get(server_groups::show).delete(server_groups::delete))
        .route("/os-services/{id}", axum::routing::put(hosts::update_service))
        .route("/os-hosts", get(os_hosts::list))
        .route("/os-hosts/{host}", get(os_hosts::show).put(os_hosts::update))
        .route("/os-hosts/{host}/{action}", get(os_hosts::power_action))
        .route("/os-instance_usage_audit_log", get(audit_log::list))
        .route("/os-instance_usage_audit_log/{before}", get(audit_log::show))
        .route("/os-server-external-events", post(external_events::create))
        .route("/os-networks", get(os_networks::list).post(os_networks::removed))
        .route("/os-networks/add", post(os_networks::removed))
        .route("/os-networks/{id}", get(os_networks::show).delete(os_networks::removed))
        .route("/os-networks/{id}/action", post(os_networks::removed))
        .route("/os-tenant-networks", get(os_networks::list_tenant).post(os_networks::removed))
        .route("/os-tenant-networks/{id}", get(os_networks::show_tenant).delete(os_networks::removed))
        // Issue 17, slice F: more compute API.
        .route("/os-quota-class-sets/{id}", get(quotas::show_class).put(quotas::update_class))
        .route("/servers/{id}/os-server-password", get(extras::show_password).delete(extras::clear_password))
        .route("/os-simple-tenant-usage", get(extras::list_usage))
        .route("/os-simple-tenant-usage/{project_id}", get(extras::show_usage))
        .route("/servers/{id}/os-interface", get(interfaces::list).post(interfaces::create))
        .route("/servers/{id}/os-interface/{port_id}", get(interfaces::show).delete(interfaces::delete))
        .route("/servers/{id}/diagnostics", get(interfaces::diagnostics))
}

/// v2.0 requests carry no microversion: whatever headers they send, the base version serves them.
async fn legacy_v2(mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let h = req.headers_mut();
    h.remove("openstack-api-version");
    h.remove("x-openstack-nova-api-version");
    next.run(req).await
}

fn version_doc_v20(state: &AppState) -> Value {
    json!({
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": state.url("compute/v2/")}],
    })
}

async fn version_v20(State(state): State<AppState>) -> axum::Json<Value> {
    let mut v = version_doc_v20(&state);
    v["links"] = json!([
        {"rel": "self", "href": state.url("compute/v2/")},
        {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
    ]);
    v["media-types"] =
        json!([{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}]);
    axum::Json(json!({"version": v}))
}

fn version_doc(state: &AppState) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": microversion::MAX.to_string(),
        "min_version": microversion::MIN.to_string(),
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            {"rel": "self", "href": state.url("compute/v2.1/")},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    })
}

async fn versions(State(state): State<AppState>) -> impl IntoResponse {
    let mut v = version_doc(&state);
    if let Some(o) = v.as_object_mut() {
        o.remove("media-types");
    }
    // Nova lists v2.0 first (tempest checks the order).
    (StatusCode::OK, axum::Json(json!({"versions": [version_doc_v20(&state), v]})))
}

async fn version(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({"version": version_doc(&state)}))
}

/// Nova's `*_links` for a list: a `next` link when a limited page came back full.
pub(crate) fn next_links(
    state: &AppState,
    path: &str,
    limit: Option<usize>,
    returned: usize,
    last: Option<&str>,
) -> Option<Value> {
    let (limit, last) = (limit?, last?);
    (returned == limit).then(
        || json!([{"rel": "next", "href": state.url(&format!("compute/v2.1/{path}?limit={limit}&marker={last}"))}]),
    )
}

/// `self` and `bookmark` links of a compute resource.
pub(crate) fn links(state: &AppState, path: &str) -> Value {
    json!([
        {"rel": "self", "href": state.url(&format!("compute/v2.1/{path}"))},
        {"rel": "bookmark", "href": state.url(&format!("compute/{path}"))},
    ])
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod admin_api_tests;
#[cfg(test)]
mod bdm_tests;
#[cfg(test)]
mod server_tests;

#[cfg(test)]
mod agent_tests;

#[cfg(test)]
mod console_tests;
#[cfg(test)]
mod extras_tests;
#[cfg(test)]
mod metadata_tests;
#[cfg(test)]
mod rebuild_tests;
#[cfg(test)]
mod server_images_tests;

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod live_migration_tests;
#[cfg(test)]
mod migration_tests;
