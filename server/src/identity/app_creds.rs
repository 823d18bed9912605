//! Application credentials (`/v3/users/{id}/application_credentials`) and their access rules
//! (`/v3/users/{id}/access_rules`): a user delegates some of their roles on one project to a
//! secret that authenticates by itself (the `application_credential` auth method, see
//! `tokens.rs`). The secret is shown once and stored as an argon2id hash.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::resources::{JsonResult, list_links, name_field};
use crate::auth::{self, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::app_creds::{AccessRule, AppCred};
use crate::store::identity::Role;
use crate::store::{flag, new_hex_id};

/// How `expires_at` is stored and shown: naive UTC with microseconds, which is what Keystone
/// answers (Python's `isoformat()` of the stored datetime).
const EXPIRES_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// Parses an `expires_at` (ISO 8601 with or without an offset; naive means UTC).
pub(super) fn parse_expiry(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let naive = s.trim_end_matches('Z');
    chrono::NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc())
}

fn expired(c: &AppCred) -> bool {
    c.expires_at.as_deref().and_then(parse_expiry).is_some_and(|t| t <= chrono::Utc::now())
}

/// The roles a token from this credential carries: the credential's roles (with what they
/// imply) that the user still holds on the project (`user_roles`). `None` when the
/// credential is gone or expired.
pub async fn delegated_roles(
    state: &AppState,
    app_cred_id: &str,
    user_roles: Vec<Role>,
) -> ApiResult<Option<Vec<Role>>> {
    let c = match state.store.get_app_cred(app_cred_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if expired(&c) {
        return Ok(None);
    }
    let granted = state.store.expand_implied(state.store.app_cred_roles(&c.id).await?).await?;
    Ok(Some(user_roles.into_iter().filter(|r| granted.iter().any(|g| g.id == r.id)).collect()))
}

/// Checks an application credential's secret; the credential when it is valid.
pub async fn authenticate(state: &AppState, c: AppCred, secret: String) -> ApiResult<AppCred> {
    let ok = state.limits.hashing.verify(secret, c.secret_hash.clone()).await?;
    if !ok || expired(&c) {
        return Err(ApiError::unauthorized("The request you have made requires authentication."));
    }
    let user = state.store.get_user(&c.user_id).await?;
    if user.enabled == 0 {
        return Err(ApiError::unauthorized("The request you have made requires authentication."));
    }
    Ok(c)
}

fn rule_json(r: &AccessRule) -> Value {
    json!({"id": r.id, "service": r.service, "path": r.path, "method": r.method})
}

async fn app_cred_json(state: &AppState, c: &AppCred, secret: Option<&str>) -> ApiResult<Value> {
    let roles: Vec<Value> = state
        .store
        .app_cred_roles(&c.id)
        .await?
        .iter()
        .map(|r| json!({"id": r.id, "name": r.name, "domain_id": r.domain_id}))
        .collect();
    let rules: Vec<Value> = state.store.app_cred_access_rules(&c.id).await?.iter().map(rule_json).collect();
    let mut v = json!({
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "user_id": c.user_id,
        "project_id": c.project_id,
        "roles": roles,
        "expires_at": c.expires_at,
        "unrestricted": c.unrestricted != 0,
        "access_rules": rules,
        "links": {"self": state.url(&format!("identity/v3/users/{}/application_credentials/{}", c.user_id, c.id))},
    });
    if let Some(s) = secret {
        v["secret"] = json!(s);
    }
    Ok(v)
}

/// Only the user (or a cloud admin, for reading and deleting) manages their credentials.
fn owner_or_admin(ctx: &Ctx, user_id: &str, action: &str) -> ApiResult<()> {
    if ctx.user.id == user_id || ctx.is_admin() { Ok(()) } else { Err(ApiError::policy(action)) }
}

#[derive(Deserialize)]
pub struct AppCredReq {
    application_credential: AppCredBody,
}
#[derive(Deserialize)]
struct AppCredBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    roles: Option<Vec<RoleRef>>,
    #[serde(default)]
    unrestricted: Option<bool>,
    #[serde(default)]
    access_rules: Option<Vec<RuleRef>>,
}
#[derive(Deserialize)]
struct RoleRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}
#[derive(Deserialize)]
struct RuleRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    method: Option<String>,
}

/// `POST /v3/users/{id}/application_credentials`
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    Json(req): Json<AppCredReq>,
) -> ApiResult<impl IntoResponse> {
    if ctx.user.id != user_id {
        return Err(ApiError::policy("identity:create_application_credential"));
    }
    let project_id = ctx.project_id()?.to_string();
    // A restricted credential's token cannot mint further credentials (Keystone).
    if let Some(parent) = &ctx.token.app_cred_id
        && state.store.get_app_cred(parent).await.map(|c| c.unrestricted == 0).unwrap_or(true)
    {
        return Err(ApiError::forbidden("Using an application credential to create another one is not allowed."));
    }
    let b = req.application_credential;
    let name = name_field("application_credential/name", &b.name, 255)?.to_string();
    let expires_at = match &b.expires_at {
        None => None,
        Some(s) => {
            let t = parse_expiry(s).ok_or_else(|| {
                ApiError::bad_request(format!("Invalid input for field 'application_credential/expires_at': {s}."))
            })?;
            if t <= chrono::Utc::now() {
                return Err(ApiError::bad_request("The application credential would already have expired."));
            }
            Some(t.format(EXPIRES_FORMAT).to_string())
        }
    };
    // Roles: a subset of what the token carries (all of them by default).
    let roles: Vec<String> = match b.roles {
        None => ctx.roles.iter().map(|r| r.id.clone()).collect(),
        Some(refs) => {
            let mut ids = Vec::new();
            for r in refs {
                let held = ctx.roles.iter().find(|h| Some(&h.id) == r.id.as_ref() || Some(&h.name) == r.name.as_ref());
                match held {
                    Some(h) => ids.push(h.id.clone()),
                    None => {
                        return Err(ApiError::forbidden(format!(
                            "Cannot delegate role {} that the user does not hold on the project.",
                            r.id.or(r.name).unwrap_or_default()
                        )));
                    }
                }
            }
            ids
        }
    };
    let mut rules = Vec::new();
    for r in b.access_rules.unwrap_or_default() {
        let rule = match (r.id, r.service, r.path, r.method) {
            (Some(id), None, None, None) => state.store.get_access_rule(&user_id, &id).await?,
            (id, Some(service), Some(path), Some(method)) => {
                AccessRule { id: id.unwrap_or_else(new_hex_id), service, path, method: method.to_uppercase() }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "Invalid input for field 'application_credential/access_rules': each needs an id, or service, path and method.",
                ));
            }
        };
        rules.push(rule);
    }
    let secret = b.secret.unwrap_or_else(auth::random_secret);
    let c = AppCred {
        id: new_hex_id(),
        user_id,
        project_id,
        name,
        description: b.description,
        secret_hash: state.limits.hashing.hash(secret.clone()).await?,
        expires_at,
        unrestricted: flag(b.unrestricted.unwrap_or(false)),
    };
    state.store.create_app_cred(&c, &roles, &rules).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"application_credential": app_cred_json(&state, &c, Some(&secret)).await?})),
    ))
}

/// `GET /v3/users/{id}/application_credentials`
pub async fn list(State(state): State<AppState>, ctx: Ctx, Path(user_id): Path<String>, q: Query) -> JsonResult {
    owner_or_admin(&ctx, &user_id, "identity:list_application_credentials")?;
    let mut out = Vec::new();
    for c in state.store.list_app_creds(&user_id, q.get("name")).await? {
        out.push(app_cred_json(&state, &c, None).await?);
    }
    Ok(axum::Json(json!({
        "application_credentials": out,
        "links": list_links(&state, &format!("users/{user_id}/application_credentials")),
    })))
}

/// `GET /v3/users/{uid}/application_credentials/{id}`
pub async fn get(State(state): State<AppState>, ctx: Ctx, Path((user_id, id)): Path<(String, String)>) -> JsonResult {
    owner_or_admin(&ctx, &user_id, "identity:get_application_credential")?;
    let c = state.store.get_app_cred(&id).await?;
    if c.user_id != user_id {
        return Err(ApiError::not_found(format!("Could not find Application Credential: {id}.")));
    }
    Ok(axum::Json(json!({"application_credential": app_cred_json(&state, &c, None).await?})))
}

/// `DELETE /v3/users/{uid}/application_credentials/{id}`
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((user_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    owner_or_admin(&ctx, &user_id, "identity:delete_application_credential")?;
    state.store.delete_app_cred(&user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/users/{id}/access_rules`
pub async fn list_rules(State(state): State<AppState>, ctx: Ctx, Path(user_id): Path<String>) -> JsonResult {
    owner_or_admin(&ctx, &user_id, "identity:list_access_rules")?;
    let rules: Vec<Value> = state.store.list_access_rules(&user_id).await?.iter().map(rule_json).collect();
    Ok(axum::Json(
        json!({"access_rules": rules, "links": list_links(&state, &format!("users/{user_id}/access_rules"))}),
    ))
}

/// `GET /v3/users/{uid}/access_rules/{id}`
pub async fn get_rule(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((user_id, id)): Path<(String, String)>,
) -> JsonResult {
    owner_or_admin(&ctx, &user_id, "identity:get_access_rule")?;
    let r = state.store.get_access_rule(&user_id, &id).await?;
    Ok(axum::Json(json!({"access_rule": rule_json(&r)})))
}

/// `DELETE /v3/users/{uid}/access_rules/{id}`: refused while a credential uses the rule.
pub async fn delete_rule(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((user_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    owner_or_admin(&ctx, &user_id, "identity:delete_access_rule")?;
    state.store.get_access_rule(&user_id, &id).await?;
    if state.store.access_rule_in_use(&id).await? {
        return Err(ApiError::forbidden(format!("Access rule {id} is in use by an application credential.")));
    }
    state.store.delete_access_rule(&user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
