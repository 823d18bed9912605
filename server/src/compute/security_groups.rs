//! Nova's side of Neutron security groups: `security_groups` on server create, the
//! `addSecurityGroup`/`removeSecurityGroup` actions, and `GET /servers/{id}/os-security-groups`.
//! Groups live in Neutron (here `store::security_groups`); Nova only applies them to the
//! server's ports, as Nova's `security_group_api` does.

use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::servers::visible;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::network::PortUpdate;
use crate::store::security_groups::{Rule, SecurityGroup};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// The id of the project's group called `name_or_id` (an id, else a unique name; `default`
/// is made on first use). `None`: no such group.
async fn find(state: &AppState, project_id: &str, name_or_id: &str) -> ApiResult<Option<String>> {
    if name_or_id == "default" {
        return Ok(Some(state.store.ensure_default_security_group(project_id).await?));
    }
    let groups = state.store.list_security_groups(Some(project_id)).await?;
    if let Some(g) = groups.iter().find(|g| g.id == name_or_id) {
        return Ok(Some(g.id.clone()));
    }
    let named: Vec<&SecurityGroup> = groups.iter().filter(|g| g.name == name_or_id).collect();
    match named.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.id.clone())),
        _ => Err(ApiError::conflict(format!(
            "Multiple security groups found matching '{name_or_id}'. Use an ID to be more specific."
        ))),
    }
}

/// `security_groups` of `POST /servers` (`[{"name": …}]`, names or ids) as group ids; empty
/// when none are named (the ports then get the project's default group).
pub(crate) async fn resolve_requested(
    state: &AppState,
    project_id: &str,
    raw: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let list = match raw {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(bad(format!("Invalid input for field/attribute security_groups. Value: {other}."))),
    };
    let mut ids = Vec::new();
    for item in list {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(format!("Invalid input for field/attribute security_groups. Value: {item}.")))?;
        let id = find(state, project_id, name)
            .await?
            .ok_or_else(|| bad(format!("Security group {name} not found for project {project_id}.")))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `addSecurityGroup` (`add`) / `removeSecurityGroup`: `{"name": …}` on every port of the server.
pub(crate) async fn action(state: &AppState, ctx: &Ctx, id: &str, add: bool, args: &Value) -> ApiResult<()> {
    let verb = if add { "add" } else { "remove" };
    ctx.require_member(&format!("os_compute_api:os-security-groups:{verb}"))?;
    let action = if add { "addSecurityGroup" } else { "removeSecurityGroup" };
    let name = args
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .ok_or_else(|| bad(format!("Invalid input for field/attribute {action}. 'name' is a required property")))?;
    if name.is_empty() {
        return Err(bad("Security group name cannot be empty"));
    }
    let inst = visible(state, ctx, id).await?;
    let group = find(state, &inst.project_id, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Security group {name} not found.")))?;
    let ports = state.store.ports_by_device(&inst.id).await?;
    if ports.is_empty() {
        return Err(ApiError::not_found(format!(
            "instance_id {} could not be found as device id on any ports",
            inst.id
        )));
    }
    let mut found = false;
    for p in ports {
        let mut groups = p.security_group_ids.clone();
        if add {
            if p.port_security_enabled == 0 {
                return Err(bad(
                    "Network requires port_security_enabled and subnet associated in order to apply security groups.",
                ));
            }
            if groups.contains(&group) {
                return Err(bad(format!("Security group {name} is already associated with the instance {}", inst.id)));
            }
            groups.push(group.clone());
        } else {
            let before = groups.len();
            groups.retain(|g| *g != group);
            if groups.len() == before {
                continue;
            }
        }
        found = true;
        state.store.update_port(&p.id, &PortUpdate { security_groups: Some(groups), ..Default::default() }).await?;
    }
    if !found {
        return Err(ApiError::not_found(format!("Security group {name} not associated with the instance {}", inst.id)));
    }
    Ok(())
}

/// A rule as Nova's security group proxy shows it (ingress only: Nova's model has no egress).
fn nova_rule(r: &Rule, names: &[SecurityGroup]) -> Option<Value> {
    if r.direction != "ingress" {
        return None;
    }
    let (group, ip_range) = match &r.remote_group_id {
        Some(g) => {
            let name = names.iter().find(|n| n.id == *g).map(|n| n.name.clone());
            (json!({"name": name, "tenant_id": r.project_id}), json!({}))
        }
        None => (
            json!({}),
            json!({"cidr": r.remote_ip_prefix.clone().unwrap_or_else(|| {
                if r.ethertype == "IPv6" { "::/0".into() } else { "0.0.0.0/0".into() }
            })}),
        ),
    };
    Some(json!({
        "id": r.id,
        "parent_group_id": r.security_group_id,
        "ip_protocol": r.protocol,
        "from_port": r.port_range_min.unwrap_or(-1),
        "to_port": r.port_range_max.unwrap_or(-1),
        "group": group,
        "ip_range": ip_range,
    }))
}

/// `GET /servers/{id}/os-security-groups`: the groups of the server's ports.
pub async fn list_for_server(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("os_compute_api:os-security-groups:list")?;
    let inst = visible(&state, &ctx, &id).await?;
    let ports = state.store.ports_by_device(&inst.id).await?;
    let mut ids: Vec<&str> = ports.iter().flat_map(|p| p.security_group_ids.iter().map(String::as_str)).collect();
    ids.sort_unstable();
    ids.dedup();
    let all = state.store.list_security_groups(Some(&inst.project_id)).await?;
    let groups: Vec<Value> = all
        .iter()
        .filter(|g| ids.contains(&g.id.as_str()))
        .map(|g| {
            json!({
                "id": g.id,
                "name": g.name,
                "description": g.description,
                "tenant_id": g.project_id,
                "rules": g.rules.iter().filter_map(|r| nova_rule(r, &all)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(axum::Json(json!({"security_groups": groups})))
}
