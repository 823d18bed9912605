//! `/v3/auth/*`: issuing, validating and revoking tokens (password, token and
//! application_credential methods; project, domain and system scopes).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::catalog::catalog;
use super::{domain_ref, project_json};
use crate::auth::{self, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::identity::{Scope, Token, User};
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
    #[serde(default)]
    application_credential: Option<AppCredMethod>,
}

#[derive(Deserialize)]
struct AppCredMethod {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user: Option<AppCredUser>,
    secret: String,
}

#[derive(Deserialize)]
struct AppCredUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<NamedRef>,
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

/// A lookup for authentication where "not found" must read as a failed authentication (401),
/// never as a 404 that would tell the caller what exists.
fn not_found_is_auth_failure<T>(found: Result<T, StoreError>) -> ApiResult<T> {
    match found {
        Ok(v) => Ok(v),
        Err(StoreError::NotFound(_)) => Err(auth_failed()),
        Err(e) => Err(e.into()),
    }
}

/// `POST /v3/auth/tokens`
pub async fn issue(State(state): State<AppState>, q: Query, Json(req): Json<AuthRequest>) -> ApiResult<Response> {
    let AuthBody { identity, scope } = req.auth;
    // Who: a password, an existing token (rescoping keeps its expiry and adds "token" to its
    // methods), or an application credential (scoped to its project, nothing else).
    let mut app_cred = None;
    let (user, methods, expires_at, audit_ids) = if identity.methods.iter().any(|m| m == "password") {
        let p = identity
            .password
            .ok_or_else(|| ApiError::bad_request("Invalid input for field 'identity/password': required."))?;
        let user = find_user(&state, &p.user).await?;
        if !super::lockout::check_password(&state, &user, p.user.password).await? || user.enabled == 0 {
            return Err(auth_failed());
        }
        let expires = chrono::Utc::now() + chrono::Duration::seconds(state.cfg.token_lifetime_secs);
        (user, vec!["password".to_string()], expires, None)
    } else if identity.methods.iter().any(|m| m == "token") {
        let t = identity
            .token
            .ok_or_else(|| ApiError::bad_request("Invalid input for field 'identity/token': required."))?;
        let ctx = auth::validate(&state, &t.id).await?.ok_or_else(auth_failed)?;
        if ctx.token.app_cred_id.is_some() {
            // Keystone: a token from an application credential cannot be rescoped.
            return Err(ApiError::forbidden("A token created from an application credential cannot be rescoped."));
        }
        let expires = parse_time(&ctx.token.expires_at).ok_or_else(auth_failed)?;
        let parent_audit = ctx.token.audit_id.clone();
        let mut methods: Vec<String> = ctx.token.methods.split(',').map(str::to_string).collect();
        if !methods.iter().any(|m| m == "token") {
            methods.push("token".to_string());
        }
        (ctx.user, methods, expires, Some(parent_audit))
    } else if identity.methods.iter().any(|m| m == "application_credential") {
        let a = identity.application_credential.ok_or_else(|| {
            ApiError::bad_request("Invalid input for field 'identity/application_credential': required.")
        })?;
        let c = find_app_cred(&state, &a).await?;
        let c = super::app_creds::authenticate(&state, c, a.secret).await?;
        let user = state.store.get_user(&c.user_id).await?;
        let mut expires = chrono::Utc::now() + chrono::Duration::seconds(state.cfg.token_lifetime_secs);
        if let Some(limit) = c.expires_at.as_deref().and_then(super::app_creds::parse_expiry) {
            expires = expires.min(limit);
        }
        app_cred = Some(c);
        (user, vec!["application_credential".to_string()], expires, None)
    } else {
        return Err(ApiError::unauthorized(format!(
            "Attempted to authenticate with an unsupported method: {:?}",
            identity.methods
        )));
    };

    let requested = match scope {
        None => user.default_project_id.clone().filter(|s| !s.is_empty()).map(Scope::Project),
        Some(Value::String(s)) if s == "unscoped" => None,
        Some(Value::Object(map)) if map.contains_key("project") => {
            let ps: ProjectScope = serde_json::from_value(map["project"].clone())
                .map_err(|e| ApiError::bad_request(format!("Invalid input for field 'scope/project': {e}")))?;
            Some(Scope::Project(resolve_project(&state, &ps).await?))
        }
        Some(Value::Object(map)) if map.contains_key("domain") => {
            let d: NamedRef = serde_json::from_value(map["domain"].clone())
                .map_err(|e| ApiError::bad_request(format!("Invalid input for field 'scope/domain': {e}")))?;
            Some(Scope::Domain(resolve_domain(&state, &d).await.map_err(|_| auth_failed())?))
        }
        Some(Value::Object(map)) if map.get("system").is_some_and(|s| s["all"] == json!(true)) => Some(Scope::System),
        Some(other) => {
            return Err(ApiError::bad_request(format!("Invalid input for field 'scope': {other}")));
        }
    };
    // An application credential's token is always scoped to the credential's project.
    let scope = match &app_cred {
        Some(c) => match requested {
            Some(Scope::Project(p)) if p != c.project_id => return Err(auth_failed()),
            Some(Scope::Domain(_)) | Some(Scope::System) => return Err(auth_failed()),
            _ => Some(Scope::Project(c.project_id.clone())),
        },
        None => requested,
    };
    if let Some(sc) = &scope {
        let enabled = match sc {
            Scope::Project(pid) => state.store.get_project(pid).await?.enabled != 0,
            Scope::Domain(did) => state.store.get_domain(did).await?.enabled != 0,
            Scope::System => true,
        };
        if !enabled || state.store.effective_roles(&user.id, sc).await?.is_empty() {
            return Err(ApiError::unauthorized(format!("User {} has no access to the requested scope.", user.id)));
        }
    }

    let audit_id = auth::random_secret()[..22].to_string();
    let token = Token {
        id: auth::random_secret(),
        user_id: user.id.clone(),
        project_id: match &scope {
            Some(Scope::Project(p)) => Some(p.clone()),
            _ => None,
        },
        methods: methods.join(","),
        audit_id: match audit_ids {
            Some(parent) => format!("{audit_id} {parent}"),
            None => audit_id,
        },
        issued_at: fmt_time(chrono::Utc::now()),
        expires_at: fmt_time(expires_at),
        revoked: 0,
        domain_id: match &scope {
            Some(Scope::Domain(d)) => Some(d.clone()),
            _ => None,
        },
        system_scope: crate::store::flag(scope == Some(Scope::System)),
        app_cred_id: app_cred.as_ref().map(|c| c.id.clone()),
    };
    state.store.insert_token(&token).await?;
    // No roles left (an application credential whose roles the user lost) is a failure.
    let ctx = auth::validate(&state, &token.id).await?.ok_or_else(auth_failed)?;
    let body = token_body(&state, &ctx, !q.has("nocatalog")).await?;
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    resp.headers_mut().insert("x-subject-token", header_value(&token.id)?);
    Ok(resp)
}

async fn find_app_cred(state: &AppState, a: &AppCredMethod) -> ApiResult<crate::store::app_creds::AppCred> {
    let found = match (&a.id, &a.name) {
        (Some(id), _) => state.store.get_app_cred(id).await,
        (None, Some(name)) => {
            let u = a.user.as_ref().ok_or_else(|| {
                ApiError::bad_request(
                    "Invalid input for field 'identity/application_credential/user': required with a name.",
                )
            })?;
            let user = match (&u.id, &u.name) {
                (Some(id), _) => state.store.get_user(id).await,
                (None, Some(uname)) => {
                    let d = u.domain.as_ref().ok_or_else(|| ApiError::bad_request("A user name needs its domain."))?;
                    let domain = resolve_domain(state, d).await.map_err(|_| auth_failed())?;
                    state.store.get_user_by_name(&domain, uname).await
                }
                (None, None) => return Err(ApiError::bad_request("A user needs an id or a name.")),
            };
            match user {
                Ok(user) => state.store.get_app_cred_by_name(&user.id, name).await,
                Err(e) => Err(e),
            }
        }
        (None, None) => {
            return Err(ApiError::bad_request("An application credential needs an id or a name."));
        }
    };
    not_found_is_auth_failure(found)
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
    not_found_is_auth_failure(found)
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
    not_found_is_auth_failure(found)
}

/// The token document, identical for issue and validate.
pub async fn token_body(state: &AppState, ctx: &Ctx, with_catalog: bool) -> ApiResult<Value> {
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
    let scoped = if let Some((project, domain)) = &ctx.project {
        token["project"] = json!({"id": project.id, "name": project.name, "domain": domain_ref(domain)});
        token["is_domain"] = json!(false);
        true
    } else if let Some(domain) = &ctx.domain {
        token["domain"] = domain_ref(domain);
        true
    } else if ctx.system {
        token["system"] = json!({"all": true});
        true
    } else {
        false
    };
    if scoped {
        token["roles"] = ctx.roles.iter().map(|r| json!({"id": r.id, "name": r.name})).collect();
        if let Some(id) = &t.app_cred_id {
            token["application_credential"] = json!({"id": id, "restricted": true});
            if let Ok(c) = state.store.get_app_cred(id).await {
                token["application_credential"] =
                    json!({"id": c.id, "name": c.name, "restricted": c.unrestricted == 0});
            }
        }
        if with_catalog {
            let project_id = ctx.project.as_ref().map(|(p, _)| p.id.as_str());
            token["catalog"] = catalog(state, project_id, &ctx.user.id).await?;
        }
    }
    Ok(json!({ "token": token }))
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
    let body = token_body(&state, &ctx, !q.has("nocatalog")).await?;
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

/// `GET /v3/auth/domains`: domains the caller can scope to.
pub async fn auth_domains(State(state): State<AppState>, caller: Ctx) -> ApiResult<axum::Json<Value>> {
    let domains: Vec<Value> = state
        .store
        .user_domains(&caller.user.id)
        .await?
        .iter()
        .filter(|d| d.enabled != 0)
        .map(|d| super::domain_json(&state, d))
        .collect();
    Ok(axum::Json(json!({
        "domains": domains,
        "links": {"self": state.url("identity/v3/auth/domains"), "previous": null, "next": null},
    })))
}

/// `GET /v3/auth/system`: whether the caller can get a system-scoped token.
pub async fn auth_system(State(state): State<AppState>, caller: Ctx) -> ApiResult<axum::Json<Value>> {
    let system = if state.store.effective_roles(&caller.user.id, &Scope::System).await?.is_empty() {
        json!([])
    } else {
        json!([{"all": true}])
    };
    Ok(axum::Json(json!({
        "system": system,
        "links": {"self": state.url("identity/v3/auth/system"), "previous": null, "next": null},
    })))
}

/// `GET /v3/auth/catalog`
pub async fn auth_catalog(State(state): State<AppState>, caller: Ctx) -> ApiResult<axum::Json<Value>> {
    if caller.roles.is_empty() {
        return Err(ApiError::forbidden("A scoped token is required for this request."));
    }
    let project_id = caller.project.as_ref().map(|(p, _)| p.id.as_str());
    Ok(axum::Json(json!({
        "catalog": catalog(&state, project_id, &caller.user.id).await?,
        "links": {"self": state.url("identity/v3/auth/catalog"), "previous": null, "next": null},
    })))
}
