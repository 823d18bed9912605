//! Neutron v2.0: networks, subnets, ports with IPAM, tags, quotas; version and extension
//! discovery.
//!
//! Handlers live per resource ([`networks`], [`subnets`], [`ports`], [`quotas`], [`tags`]);
//! [`api`] holds what they share (bodies, converters, list processing), [`ipam`] the address
//! arithmetic. Storage, allocation and quota enforcement are in `store::network`, so other
//! services (compute) can create and delete ports without going through HTTP.

pub(crate) mod api;
pub mod ipam;
mod networks;
mod ports;
mod quotas;
mod security_group_rules;
mod security_groups;
mod subnets;
mod tags;

#[cfg(test)]
mod security_group_tests;
#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::{Value, json};

use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use tags::{NETWORK, PORT, SUBNET};

/// Routes under `/network`.
pub fn router() -> Router<AppState> {
    let v2 = Router::new()
        .route("/", get(resources))
        .route("/extensions", get(extensions))
        .route("/extensions/{alias}", get(extension))
        .route("/networks", get(networks::list).post(networks::create))
        .route("/networks/{id}", get(networks::show).put(networks::update).delete(networks::delete))
        .route("/subnets", get(subnets::list).post(subnets::create))
        .route("/subnets/{id}", get(subnets::show).put(subnets::update).delete(subnets::delete))
        .route("/ports", get(ports::list).post(ports::create))
        .route("/ports/{id}", get(ports::show).put(ports::update).delete(ports::delete))
        .route(
            "/networks/{id}/tags",
            get(tags::list::<NETWORK>).put(tags::replace::<NETWORK>).delete(tags::clear::<NETWORK>),
        )
        .route(
            "/networks/{id}/tags/{tag}",
            get(tags::check::<NETWORK>).put(tags::add::<NETWORK>).delete(tags::remove::<NETWORK>),
        )
        .route(
            "/subnets/{id}/tags",
            get(tags::list::<SUBNET>).put(tags::replace::<SUBNET>).delete(tags::clear::<SUBNET>),
        )
        .route(
            "/subnets/{id}/tags/{tag}",
            get(tags::check::<SUBNET>).put(tags::add::<SUBNET>).delete(tags::remove::<SUBNET>),
        )
        .route("/ports/{id}/tags", get(tags::list::<PORT>).put(tags::replace::<PORT>).delete(tags::clear::<PORT>))
        .route("/ports/{id}/tags/{tag}", get(tags::check::<PORT>).put(tags::add::<PORT>).delete(tags::remove::<PORT>))
        .route("/security-groups", get(security_groups::list).post(security_groups::create))
        .route(
            "/security-groups/{id}",
            get(security_groups::show).put(security_groups::update).delete(security_groups::delete),
        )
        .route("/security-group-rules", get(security_group_rules::list).post(security_group_rules::create))
        .route("/security-group-rules/{id}", get(security_group_rules::show).delete(security_group_rules::delete))
        .route("/quotas", get(quotas::list))
        .route("/quotas/tenant", get(quotas::tenant))
        .route("/quotas/project", get(quotas::project))
        .route("/quotas/{project_id}", get(quotas::show).put(quotas::update).delete(quotas::reset))
        .route("/quotas/{project_id}/default", get(quotas::show_default))
        .route("/quotas/{project_id}/details", get(quotas::details));
    Router::new().route("/", get(versions)).nest("/v2.0", v2)
}

async fn versions(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(
        json!({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": state.url("network/v2.0/")}]}]}),
    )
}

/// `GET /v2.0`: the core resources.
async fn resources(State(state): State<AppState>) -> axum::Json<Value> {
    let list: Vec<Value> = [("network", "networks"), ("subnet", "subnets"), ("port", "ports")]
        .iter()
        .map(|(name, collection)| {
            json!({
                "name": name,
                "collection": collection,
                "links": [{"rel": "self", "href": state.url(&format!("network/v2.0/{collection}"))}],
            })
        })
        .collect();
    axum::Json(json!({"resources": list}))
}

/// The extensions this server honours: (alias, name, description, updated). Only what works is
/// listed: clients act on this list (openstacksdk's cloud layer looks for a floating IP for
/// each new server when `external-net` is present, so it is absent until routers and floating
/// IPs exist), and an attribute of an extension not listed is refused as unrecognized.
const EXTENSIONS: [(&str, &str, &str, &str); 21] = [
    ("security-group", "security-group", "The security groups extension.", "2012-10-05T10:00:00-00:00"),
    (
        "stateful-security-group",
        "Stateful security group",
        "Indicates if the security group is stateful or not",
        "2019-11-26T09:00:00-00:00",
    ),
    (
        "quotas",
        "Quota management support",
        "Expose functions for quotas management per project",
        "2012-07-29T10:00:00-00:00",
    ),
    (
        "quota_details",
        "Quota details management support",
        "Expose functions for quotas usage statistics per project",
        "2017-02-10T10:00:00-00:00",
    ),
    (
        "quota-check-limit",
        "Quota engine limit check",
        "Support for checking the resource usage before applying a new quota limit",
        "2023-02-14T10:00:00-00:00",
    ),
    (
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
        "2016-09-09T09:09:09-09:09",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
        "2016-02-10T10:00:00-00:00",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.",
        "2016-09-12T10:00:00-00:00",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
        "2016-04-11T10:00:00-00:00",
    ),
    (
        "standard-attr-tag",
        "Tag support for resources with standard attribute: network, subnet, port",
        "Enables to set tag on resources with standard attribute.",
        "2017-01-01T00:00:00-00:00",
    ),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource.", "2015-03-25T10:00:00-00:00"),
    (
        "net-mtu-writable",
        "Network MTU (writable)",
        "Provides a writable MTU attribute for a network resource.",
        "2017-07-12T00:00:00-00:00",
    ),
    ("l2_adjacency", "L2 Adjacency", "Display L2 Adjacency for Neutron Networks.", "2016-04-12T16:00:00-00:00"),
    (
        "binding",
        "Port Binding",
        "Expose port bindings of a virtual port to external application",
        "2014-02-03T10:00:00-00:00",
    ),
    ("port-security", "Port Security", "Provides port security", "2012-07-23T10:00:00-00:00"),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs", "2013-07-23T10:00:00-00:00"),
    (
        "extra_dhcp_opt",
        "Neutron Extra DHCP options",
        "Extra options configuration for DHCP. For example PXE boot options to DHCP clients can be specified (e.g. tftp-server, server-ip-address, bootfile-name)",
        "2013-03-17T12:00:00-00:00",
    ),
    (
        "ip-substring-filtering",
        "IP address substring filtering",
        "Provides IP address substring filtering when listing ports",
        "2017-11-28T09:00:00-00:00",
    ),
    (
        "pagination",
        "Pagination support",
        "Extension that indicates that pagination is enabled.",
        "2016-06-12T00:00:00-00:00",
    ),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled.", "2016-06-12T00:00:00-00:00"),
    (
        "filter-validation",
        "Filter parameters validation",
        "Provides validation on filter parameters.",
        "2018-03-21T10:00:00-00:00",
    ),
];

fn extension_json(e: &(&str, &str, &str, &str)) -> Value {
    json!({"alias": e.0, "name": e.1, "description": e.2, "updated": e.3, "links": []})
}

async fn extensions(ctx: Ctx) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("get_extension").map_err(|_| api::deny("get_extension"))?;
    Ok(axum::Json(json!({"extensions": EXTENSIONS.iter().map(extension_json).collect::<Vec<_>>()})))
}

async fn extension(ctx: Ctx, Path(alias): Path<String>) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("get_extension").map_err(|_| api::deny("get_extension"))?;
    EXTENSIONS
        .iter()
        .find(|e| e.0 == alias)
        .map(|e| axum::Json(json!({"extension": extension_json(e)})))
        .ok_or_else(|| ApiError::not_found(format!("Extension with alias {alias} does not exist")))
}
