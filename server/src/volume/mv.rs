//! Cinder's microversions (`cinder/api/microversions.py`): the request's version as an
//! extractor, the versions at which something served here changes, and the gate of routes that
//! appear at a version.
//!
//! Between 3.0 and [`super::MAX_VERSION`] these change what is served here (the rest concern
//! API families that do not exist here, which answer 404 at every version):
//!
//! | version | change |
//! | --- | --- |
//! | 3.12 | `GET /volumes/summary` |
//! | 3.13 | `group_id` in a volume |
//! | 3.14 | `group_snapshot_id` in a snapshot (show, create, update, detailed list) |
//! | 3.15 | `Etag` on volume metadata, `If-Match` on its replacement |
//! | 3.21 | `provider_id` in a volume (admins) |
//! | 3.23 | `force` on volume delete (admins) |
//! | 3.27 | the attachments API |
//! | 3.30 | snapshot lists sorted by `name` |
//! | 3.31 | unknown volume and snapshot list filters are a 400 for non-admins (`resource_filters.json`) |
//! | 3.33 | `GET /resource_filters` |
//! | 3.34 | `key~=value` (like) filters |
//! | 3.36 | `metadata` in the volumes summary |
//! | 3.2 | a `bootable` list filter must be a true/false word (400 otherwise) |
//! | 3.39 | `project_id` on `/limits` (admins) |
//! | 3.40 | the `revert` action (to the latest snapshot) |
//! | 3.41 | `user_id` in a snapshot (show, create, update, detailed list) |
//! | 3.42 | extend of an `in-use` volume |
//! | 3.44 | attachment `os-complete` |
//! | 3.45 | `with_count` on volume and snapshot lists |
//! | 3.47 | `backup_id` on volume create |
//! | 3.48 | `shared_targets` and `service_uuid` in a volume |

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use crate::error::ApiError;
use crate::state::AppState;

pub const VOLUME_SUMMARY: u32 = 12;
pub const GROUP_VOLUME: u32 = 13;
pub const GROUP_SNAPSHOTS: u32 = 14;
pub const ETAGS: u32 = 15;
pub const VOLUME_DETAIL_PROVIDER_ID: u32 = 21;
pub const VOLUME_DELETE_FORCE: u32 = 23;
pub const NEW_ATTACH: u32 = 27;
pub const SNAPSHOT_SORT: u32 = 30;
pub const RESOURCE_FILTER: u32 = 31;
pub const RESOURCE_FILTERS_API: u32 = 33;
pub const LIKE_FILTER: u32 = 34;
pub const VOLUME_SUMMARY_METADATA: u32 = 36;
pub const LIMITS_ADMIN_FILTER: u32 = 39;
pub const VOLUME_REVERT: u32 = 40;
pub const SNAPSHOT_LIST_USER_ID: u32 = 41;
pub const VOLUME_EXTEND_INUSE: u32 = 42;
pub const NEW_ATTACH_COMPLETION: u32 = 44;
pub const SUPPORT_COUNT_INFO: u32 = 45;
pub const VOLUME_CREATE_FROM_BACKUP: u32 = 47;
pub const VOLUME_SHARED_TARGETS_AND_SERVICE_FIELDS: u32 = 48;

/// The microversion a request is served at (3.x), as `negotiate` chose it; 3.0 where no
/// negotiation ran (handler tests calling a route directly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mv(pub u32, pub u32);

impl Mv {
    /// Whether the request's version is 3.`minor` or later.
    pub fn at_least(self, minor: u32) -> bool {
        self >= Mv(3, minor)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Mv {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Mv>().copied().unwrap_or(Mv(3, 0)))
    }
}

/// A route that exists from 3.`minor` on: below it Cinder's `VersionNotFoundForAPIMethod`,
/// a 404.
pub fn gated_router(minor: u32, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.route_layer(from_fn(move |req: Request, next: Next| async move {
        let v = req.extensions().get::<Mv>().copied().unwrap_or(Mv(3, 0));
        if !v.at_least(minor) {
            return ApiError::not_found("The resource could not be found.").into_response();
        }
        let resp: Response = next.run(req).await;
        resp
    }))
}

/// Query keys that are paging, sorting or scope rather than filters.
const NOT_FILTERS: [&str; 9] =
    ["sort", "sort_key", "sort_dir", "limit", "marker", "offset", "with_count", "all_tenants", "project_id"];

/// From 3.31 a non-admin's list filters must be ones Cinder's default `resource_filters.json`
/// enables for the resource (from 3.34 also as `key~`, a like filter); anything else is a 400.
/// Admins may filter on anything. Before 3.31 unknown filters are dropped.
pub fn reject_invalid_filters(admin: bool, q: &crate::extract::Query, v: Mv, allowed: &[&str]) -> Result<(), ApiError> {
    if !v.at_least(RESOURCE_FILTER) || admin {
        return Ok(());
    }
    let like = v.at_least(LIKE_FILTER);
    let mut invalid: Vec<&str> = Vec::new();
    for (k, _) in &q.0 {
        let base = if like { k.strip_suffix('~').unwrap_or(k) } else { k.as_str() };
        if !NOT_FILTERS.contains(&k.as_str()) && !allowed.contains(&base) && !invalid.contains(&k.as_str()) {
            invalid.push(k);
        }
    }
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("Invalid filters {} are found in query options.", invalid.join(","))))
    }
}

/// The filters `resource_filters.json` enables (Cinder's default file), for 3.33's listing.
pub const RESOURCE_FILTERS: [(&str, &[&str]); 9] = [
    (
        "volume",
        &[
            "name",
            "status",
            "metadata",
            "bootable",
            "migration_status",
            "availability_zone",
            "group_id",
            "size",
            "created_at",
            "updated_at",
            "consumes_quota",
        ],
    ),
    ("backup", &["name", "status", "volume_id"]),
    ("snapshot", &["name", "status", "volume_id", "metadata", "availability_zone", "consumes_quota"]),
    ("group", &["name"]),
    ("group_snapshot", &["name", "status", "group_id"]),
    ("attachment", &["volume_id", "status", "instance_id", "attach_status"]),
    ("message", &["resource_uuid", "resource_type", "event_id", "request_id", "message_level"]),
    ("pool", &["name", "volume_type"]),
    ("volume_type", &["is_public", "extra_specs"]),
];

pub fn filters_of(resource: &str) -> &'static [&'static str] {
    RESOURCE_FILTERS.iter().find(|(r, _)| *r == resource).map(|(_, f)| *f).unwrap_or(&[])
}

/// The keys of a volume body that later microversions add (Cinder's v3 `ViewBuilder.detail`).
pub fn volume_keys(body: &mut serde_json::Value, v: Mv, admin: bool) {
    let Some(m) = body.as_object_mut() else { return };
    if v.at_least(GROUP_VOLUME) {
        m.insert("group_id".into(), serde_json::Value::Null);
    }
    if admin && v.at_least(VOLUME_DETAIL_PROVIDER_ID) {
        m.insert("provider_id".into(), serde_json::Value::Null);
    }
    if v.at_least(VOLUME_SHARED_TARGETS_AND_SERVICE_FIELDS) {
        // A file on the compute host is never a target shared between volumes; volumes have no
        // cinder-volume service of their own (the agent is their service), so no uuid.
        m.insert("shared_targets".into(), serde_json::Value::Bool(false));
        m.insert("service_uuid".into(), serde_json::Value::Null);
    }
}

/// The keys of a snapshot's detail view that later microversions add (Cinder's v3 snapshot
/// `ViewBuilder.detail`: show, create, update and the detailed list; not the summary list).
pub fn snapshot_keys(body: &mut serde_json::Value, v: Mv, user_id: &str) {
    let Some(m) = body.as_object_mut() else { return };
    if v.at_least(GROUP_SNAPSHOTS) {
        // No group snapshots exist here.
        m.insert("group_snapshot_id".into(), serde_json::Value::Null);
    }
    if v.at_least(SNAPSHOT_LIST_USER_ID) {
        m.insert("user_id".into(), serde_json::Value::String(user_id.to_string()));
    }
}

/// The `Etag` of a volume's metadata (3.15): a digest of the `{"metadata": …}` answer, opaque to
/// clients, which only send it back in `If-Match` (Cinder uses MD5 of the same text).
pub fn metadata_etag(metadata: &serde_json::Value) -> String {
    use sha2::Digest as _;
    let body = serde_json::json!({ "metadata": metadata }).to_string();
    hex::encode(&sha2::Sha256::digest(body.as_bytes())[..16])
}

/// Whether a metadata update must be refused with 412 (3.15): an `If-Match` is given and none
/// of its tags is the current one (`*` matches anything, as webob's `if_match`).
pub fn if_match_fails(headers: &axum::http::HeaderMap, v: Mv, current: &serde_json::Value) -> bool {
    if !v.at_least(ETAGS) {
        return false;
    }
    let Some(given) = headers.get(axum::http::header::IF_MATCH).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let etag = metadata_etag(current);
    !given.split(',').map(|t| t.trim().trim_start_matches("W/").trim_matches('"')).any(|t| t == "*" || t == etag)
}

/// Before 3.2 any `bootable` filter but `False`/`false`/`FALSE` means true; from 3.2 only
/// true/false words (oslo's strict `bool_from_string`), anything else a 400.
pub fn bootable_filter(value: &str, v: Mv) -> Result<bool, ApiError> {
    if !v.at_least(2) {
        return Ok(!matches!(value, "False" | "false" | "FALSE"));
    }
    match value.trim().to_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(ApiError::bad_request(format!("Invalid input received: 'bootable = {value}'"))),
    }
}
