//! `/v3/auth/*`: issuing, validating and revoking tokens (password and token methods).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{catalog, domain_ref, project_json};
use crate::auth::{self, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::identity::{Token, User};
use crate::store::{StoreError, fmt_time, parse_time};

#[derive(Deserialize)]
pub struct AuthRequest {
    auth: AuthBody,
}

#[derive(Deserialize)]
struct AuthBody {
    identity: Identity,
    #[serde(default)]
    scope: Option<Value>,
}

#[derive(Deserialize)]
struct Identity {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<PasswordMethod>,
    #[serde(default)]
    token: Option<TokenMethod>,
}

#[derive(Deserialize)]
struct PasswordMethod {
    user: UserRef,
}

#[derive(Deserialize)]
struct UserRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<NamedRef>,
    password: String,
}

#[derive(Deserialize)]
struct TokenMethod {
    id: String,
}

#[derive(Deserialize, Default)]
struct NamedRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct ProjectScope {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<NamedRef>,
}

fn auth_failed() -> ApiError {
    ApiError::unauthorized("The request you have made requires authentication.")
}

/// `POST /v3/auth/tokens`
pub async fn issue(State(state): State<AppState>, q: Query, Json(req): Json<AuthRequest>) -> ApiResult<Response> {
    let AuthBody { identity, scope } = req.auth;
    // Who: the password method, or an existing token (rescoping keeps its expiry).
    let (user, methods, expires_at, audit_ids) = if identity.methods.iter().any(|m| m == "password") {
        let p = identity
            .password
            .ok_or_else(|| ApiError::bad_request("Invalid input for field 'identity/password': required."))?;
        let user = find_user(&state, &p.user).await?;
        let hash = user.password_hash.clone().ok_or_else(auth_failed)?;
        if !auth::verify_password(p.user.password, hash).await || user.enabled == 0 {
            return Err(auth_failed());
        }
        let expires = chrono::Utc::now() + chrono::Duration::seconds(state.cfg.token_lifetime_secs);
        (user, vec!["password".to_string()], expires, None)
    } else if identity.methods.iter().any(|m| m == "token") {
        let t = identity
            .token
            .ok_or_else(|| ApiError::bad_request("Invalid input for field 'identity/token': required."))?;
        let ctx = auth::validate(&state, &t.id).await?.ok_or_else(auth_failed)?;
        let expires = parse_time(&ctx.token.expires_at).ok_or_else(auth_failed)?;
        let parent_audit = ctx.token.audit_id.clone();
        (ctx.user, vec!["token".to_string()], expires, Some(parent_audit))
    } else {
        return Err(ApiError::unauthorized(format!(
            "Attempted to authenticate with an unsupported method: {:?}",
            identity.methods
        )));
    };

    let project_id = match scope {
        None => user.default_project_id.clone().filter(|s| !s.is_empty()),
        Some(Value::String(s)) if s == "unscoped" => None,
        Some(Value::Object(map)) if map.contains_key("project") => {
            let ps: ProjectScope = serde_json::from_value(map["project"].clone())
                .map_err(|e| ApiError::bad_request(format!("Invalid input for field 'scope/project': {e}")))?;
            Some(resolve_project(&state, &ps).await?)
        }
        Some(Value::Object(map)) if map.contains_key("domain") || map.contains_key("system") => {
            return Err(ApiError::bad_request(
                "Only project scope is supported; request a project-scoped or unscoped token.",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!("Invalid input for field 'scope': {other}")));
        }
    };
    if let Some(pid) = &project_id {
        let project = state.store.get_project(pid).await?;
        if project.enabled == 0 || state.store.effective_roles(&user.id, pid).await?.is_empty() {
            return Err(ApiError::unauthorized(format!("User {} has no access to project {}", user.id, pid)));
        }
    }

    let audit_id = auth::random_secret()[..22].to_string();
    let token = Token {
        id: auth::random_secret(),
        user_id: user.id.clone(),
        project_id,
        methods: methods.join(","),
        audit_id: match audit_ids {
            Some(parent) => format!("{audit_id} {parent}"),
            None => audit_id,
        },
        issued_at: fmt_time(chrono::Utc::now()),
        expires_at: fmt_time(expires_at),
        revoked: 0,
    };
    state.store.insert_token(&token).await?;
    let ctx = auth::validate(&state, &token.id).await?.ok_or_else(auth_failed)?;
    let body = token_body(&state, &ctx, !q.has("nocatalog"));
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    resp.headers_mut().insert("x-subject-token", header_value(&token.id)?);
    Ok(resp)
}

fn header_value(s: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(s).map_err(ApiError::internal)
}

async fn find_user(state: &AppState, u: &UserRef) -> ApiResult<User> {
    let found = match (&u.id, &u.name) {
        (Some(id), _) => state.store.get_user(id).await,
        (None, Some(name)) => {
            let d = u.domain.as_ref().ok_or_else(|| {
                ApiError::bad_request(
                    "Invalid input for field 'identity/password/user/domain': required with a user name.",
                )
            })?;
            let domain = match resolve_domain(state, d).await {
                Ok(d) => d,
                Err(_) => return Err(auth_failed()),
            };
            state.store.get_user_by_name(&domain, name).await
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "Invalid input for field 'identity/password/user': id or name required.",
            ));
        }
    };
    match found {
        Ok(user) => Ok(user),
        Err(StoreError::NotFound(_)) => Err(auth_failed()),
        Err(e) => Err(e.into()),
    }
}

async fn resolve_domain(state: &AppState, d: &NamedRef) -> ApiResult<String> {
    match (&d.id, &d.name) {
        (Some(id), _) => Ok(state.store.get_domain(id).await?.id),
        (None, Some(name)) => Ok(state.store.get_domain_by_name(name).await?.id),
        (None, None) => Err(ApiError::bad_request("A domain needs an id or a name.")),
    }
}

async fn resolve_project(state: &AppState, p: &ProjectScope) -> ApiResult<String> {
    let found = match (&p.id, &p.name) {
        (Some(id), _) => state.store.get_project(id).await.map(|p| p.id),
        (None, Some(name)) => {
            let d = p.domain.as_ref().ok_or_else(|| {
                ApiError::bad_request("Invalid input for field 'scope/project/domain': required with a project name.")
            })?;
            let domain = resolve_domain(state, d).await.map_err(|_| auth_failed())?;
            state.store.get_project_by_name(&domain, name).await.map(|p| p.id)
        }
        (None, None) => {
            return Err(ApiError::bad_request("A project scope needs an id or a name."));
        }
    };
    match found {
        Ok(id) => Ok(id),
        Err(StoreError::NotFound(_)) => Err(auth_failed()),
        Err(e) => Err(e.into()),
    }
}

/// The token document, identical for issue and validate.
pub fn token_body(state: &AppState, ctx: &Ctx, with_catalog: bool) -> Value {
    let t = &ctx.token;
    let mut token = json!({
        "methods": t.methods.split(',').collect::<Vec<_>>(),
        "user": {
            "id": ctx.user.id,
            "name": ctx.user.name,
            "domain": domain_ref(&ctx.user_domain),
            "password_expires_at": null,
        },
        "audit_ids": t.audit_id.split(' ').collect::<Vec<_>>(),
        "issued_at": t.issued_at,
        "expires_at": t.expires_at,
    });
    if let Some((project, domain)) = &ctx.project {
        token["project"] = json!({"id": project.id, "name": project.name, "domain": domain_ref(domain)});
        token["is_domain"] = json!(false);
        token["roles"] = ctx.roles.iter().map(|r| json!({"id": r.id, "name": r.name})).collect();
        if with_catalog {
            token["catalog"] = catalog(state);
        }
    }
    json!({ "token": token })
}

fn subject(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("Missing X-Subject-Token header."))
}

/// Validation is open to every holder of a valid token for its own token; others need admin
/// (Keystone's `identity:validate_token`).
async fn subject_ctx(state: &AppState, caller: &Ctx, headers: &HeaderMap) -> ApiResult<Ctx> {
    let subject = subject(headers)?;
    let found = auth::validate(state, subject).await?;
    match found {
        Some(ctx) if ctx.user.id == caller.user.id || caller.is_admin() || caller.has_role("service") => Ok(ctx),
        Some(_) => Err(ApiError::policy("identity:validate_token")),
        None => Err(ApiError::not_found(format!("Could not find token: {subject}."))),
    }
}

/// `GET /v3/auth/tokens`
pub async fn validate(State(state): State<AppState>, caller: Ctx, q: Query, headers: HeaderMap) -> ApiResult<Response> {
    let ctx = subject_ctx(&state, &caller, &headers).await?;
    let body = token_body(&state, &ctx, !q.has("nocatalog"));
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert("x-subject-token", header_value(&ctx.token.id)?);
    Ok(resp)
}

/// `HEAD /v3/auth/tokens`
pub async fn check(State(state): State<AppState>, caller: Ctx, headers: HeaderMap) -> ApiResult<StatusCode> {
    subject_ctx(&state, &caller, &headers).await?;
    Ok(StatusCode::OK)
}

/// `DELETE /v3/auth/tokens`
pub async fn revoke(State(state): State<AppState>, caller: Ctx, headers: HeaderMap) -> ApiResult<StatusCode> {
    let ctx = subject_ctx(&state, &caller, &headers).await?;
    state.store.revoke_token(&ctx.token.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/auth/projects`: projects the caller can scope to.
pub async fn auth_projects(State(state): State<AppState>, caller: Ctx) -> ApiResult<axum::Json<Value>> {
    let mut out = Vec::new();
    for p in state.store.user_projects(&caller.user.id).await? {
        if p.enabled != 0 {
            out.push(project_json(&state, &p));
        }
    }
    Ok(axum::Json(json!({
        "projects": out,
        "links": {"self": state.url("identity/v3/auth/projects"), "previous": null, "next": null},
    })))
}

/// `GET /v3/auth/domains`
pub async fn auth_domains(State(state): State<AppState>, caller: Ctx) -> ApiResult<axum::Json<Value>> {
    let mut domains = Vec::new();
    for p in state.store.user_projects(&caller.user.id).await? {
        if !domains.iter().any(|d: &Value| d["id"] == p.domain_id.as_str()) {
            let d = state.store.get_domain(&p.domain_id).await?;
            domains.push(super::domain_json(&state, &d));
        }
    }
    Ok(axum::Json(json!({
        "domains": domains,
        "links": {"self": state.url("identity/v3/auth/domains"), "previous": null, "next": null},
    })))
}

/// `GET /v3/auth/catalog`
pub async fn auth_catalog(State(state): State<AppState>, caller: Ctx) -> ApiResult<axum::Json<Value>> {
    caller.project_id()?;
    Ok(axum::Json(json!({
        "catalog": catalog(&state),
        "links": {"self": state.url("identity/v3/auth/catalog"), "previous": null, "next": null},
    })))
}

/// Deletes long-expired tokens; run periodically by the server.
pub async fn purge_expired(state: &AppState) -> anyhow::Result<u64> {
    let cutoff = fmt_time(chrono::Utc::now() - chrono::Duration::days(1));
    Ok(state.store.purge_tokens(&cutoff).await?)
}
