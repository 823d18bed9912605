//! `GET /extensions` (Cinder's listing of its API extensions, only the ones served here) and
//! `GET /resource_filters` (3.33: the list filters each resource accepts).

use axum::extract::State;
use serde_json::{Value, json};

use super::mv;
use crate::auth::Ctx;
use crate::error::ApiResult;
use crate::extract::Query;
use crate::state::AppState;

/// (alias, name, description, updated) as Cinder's `cinder/api/contrib` descriptors say them.
const EXTENSIONS: [(&str, &str, &str, &str); 10] = [
    ("os-admin-actions", "AdminActions", "Enable admin actions.", "2012-08-25T00:00:00+00:00"),
    ("os-availability-zone", "AvailabilityZones", "Describe Availability Zones.", "2013-06-27T00:00:00+00:00"),
    ("os-quota-sets", "Quotas", "Quota management support.", "2011-08-08T00:00:00+00:00"),
    ("os-types-extra-specs", "TypesExtraSpecs", "Type extra specs support.", "2011-08-24T00:00:00+00:00"),
    ("os-types-manage", "TypesManage", "Types manage support.", "2011-08-24T00:00:00+00:00"),
    (
        "os-used-limits",
        "UsedLimits",
        "Provide data on limited resources that are being used.",
        "2013-10-03T00:00:00+00:00",
    ),
    ("os-volume-actions", "VolumeActions", "Enable volume actions.", "2012-05-31T00:00:00+00:00"),
    (
        "os-vol-host-attr",
        "VolumeHostAttribute",
        "Expose host as an attribute of a volume.",
        "2011-11-03T00:00:00+00:00",
    ),
    (
        "os-vol-mig-status-attr",
        "VolumeMigStatusAttribute",
        "Expose migration_status as an attribute of a volume.",
        "2013-08-08T00:00:00+00:00",
    ),
    (
        "os-vol-tenant-attr",
        "VolumeTenantAttribute",
        "Expose the internal project_id as an attribute of a volume.",
        "2011-11-03T00:00:00+00:00",
    ),
];

pub async fn list(ctx: Ctx) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("volume:extensions")?;
    let out: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(alias, name, description, updated)| {
            json!({"alias": alias, "name": name, "description": description, "updated": updated, "links": []})
        })
        .collect();
    Ok(axum::Json(json!({"extensions": out})))
}

/// `GET /resource_filters[?resource=volume]`: `{"resource_filters": [{"resource", "filters"}]}`.
pub async fn resource_filters(State(_state): State<AppState>, ctx: Ctx, q: Query) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("volume:resource_filters")?;
    let wanted = q.get("resource");
    let out: Vec<Value> = mv::RESOURCE_FILTERS
        .iter()
        .filter(|(r, _)| wanted.is_none_or(|w| w == *r))
        .map(|(r, f)| json!({"resource": r, "filters": f}))
        .collect();
    Ok(axum::Json(json!({"resource_filters": out})))
}
