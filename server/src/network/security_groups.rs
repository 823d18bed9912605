//! `/v2.0/security-groups` (the `security-group` extension), with the project's `default`
//! group created on first use as Neutron does.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::api::{self, JsonResult, Kind, Obj, Schema, deny};
use super::security_group_rules::rule_json;
use crate::auth::Ctx;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::network::NetError;
use crate::store::security_groups::{GroupUpdate, SecurityGroup, group_not_found};

pub(crate) const SCHEMA: Schema = Schema {
    singular: "security_group",
    plural: "security_groups",
    title: "Security group",
    not_found: "SecurityGroupNotFound",
    attrs: &[
        ("id", Kind::Str),
        ("name", Kind::Str),
        ("description", Kind::Str),
        ("tenant_id", Kind::Str),
        ("project_id", Kind::Str),
        ("stateful", Kind::Bool),
        ("shared", Kind::Bool),
        ("security_group_rules", Kind::Dict),
        ("tags", Kind::List),
        ("created_at", Kind::Str),
        ("updated_at", Kind::Str),
        ("revision_number", Kind::Int),
    ],
    post: &["name", "description", "tenant_id", "project_id", "stateful"],
    put: &["name", "description", "stateful"],
};

pub(crate) fn group_json(g: &SecurityGroup) -> Obj {
    let v = json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "tenant_id": g.project_id,
        "project_id": g.project_id,
        "stateful": g.stateful != 0,
        "shared": false,
        "security_group_rules": g.rules.iter().map(|r| Value::Object(rule_json(r))).collect::<Vec<_>>(),
        "tags": g.tag_list(),
        "created_at": api::time(&g.created_at),
        "updated_at": api::time(&g.updated_at),
        "revision_number": g.revision_number,
    });
    match v {
        Value::Object(o) => o,
        _ => Obj::new(),
    }
}

/// A group the caller may see (own project; admins any), or SecurityGroupNotFound.
pub(crate) async fn load_visible(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<SecurityGroup> {
    let g = state.store.get_security_group(id).await?;
    if ctx.owns(&g.project_id) { Ok(g) } else { Err(group_not_found(id).into()) }
}

/// `name`: a string, never `default` (in any case) — that one is the project's own.
fn name(m: &Obj) -> ApiResult<Option<String>> {
    let n = api::string(m, "name", 255)?;
    if n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case("default")) {
        return Err(
            NetError::conflict("SecurityGroupDefaultAlreadyExists", "Default security group already exists.").into()
        );
    }
    Ok(n)
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_reader("get_security_group").map_err(|_| deny("get_security_group"))?;
    // Neutron makes the caller's default group on its first look at the list.
    if let Some(p) = ctx.project_id().ok().filter(|p| !p.is_empty()) {
        state.store.ensure_default_security_group(p).await?;
    }
    let scope = if ctx.is_admin() { None } else { Some(ctx.project_id()?) };
    let groups = state.store.list_security_groups(scope).await?;
    api::list(&state, &SCHEMA, &q, groups.iter().map(group_json).collect(), &[])
}

pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, q: Query) -> JsonResult {
    ctx.require_reader("get_security_group").map_err(|_| deny("get_security_group"))?;
    let g = load_visible(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"security_group": api::select_fields(group_json(&g), &q)})))
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    ctx.require_member("create_security_group").map_err(|_| deny("create_security_group"))?;
    let (items, bulk) = api::create_items(&body, &SCHEMA)?;
    let mut out = Vec::with_capacity(items.len());
    for m in &items {
        api::check_post(m, &SCHEMA)?;
        let project = api::owner(&ctx, m, "create_security_group")?;
        let name = name(m)?.unwrap_or_default();
        let description = api::string(m, "description", 255)?.unwrap_or_default();
        let stateful = api::boolean(m, "stateful")?.unwrap_or(true);
        out.push(state.store.create_security_group(&project, &name, &description, stateful).await?);
    }
    api::created(&SCHEMA, out.iter().map(|g| Value::Object(group_json(g))).collect(), bulk)
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let g = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&g.project_id], "update_security_group")?;
    let m = api::update_item(&body, &SCHEMA)?;
    api::check_put(&m, &SCHEMA)?;
    let u = GroupUpdate {
        name: name(&m)?,
        description: api::string(&m, "description", 255)?,
        stateful: api::boolean(&m, "stateful")?,
    };
    let updated = state.store.update_security_group(&id, &u).await?;
    Ok(axum::Json(json!({"security_group": group_json(&updated)})))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let g = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&g.project_id], "delete_security_group")?;
    state.store.delete_security_group(&id, ctx.is_admin()).await?;
    Ok(StatusCode::NO_CONTENT)
}
