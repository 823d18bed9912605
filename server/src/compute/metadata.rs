//! The metadata service's server side: `GET /agent/v1/metadata/{path}`, asked by a host's
//! metadata proxy on behalf of one of its guests (`meridian_common::agent`,
//! [`METADATA_NETWORK_HEADER`] and [`METADATA_ADDRESS_HEADER`]).
//!
//! The guest is identified by the Meridian network its request came in on and its source
//! address, both as the host saw them, and by the calling host's credential: the answer is
//! about the one live instance placed on *that* host with a port on that network holding that
//! address, as Neutron's metadata proxy identifies guests. Nothing the guest sends can name
//! another instance, and no host can ask about another host's guests (404, as for an unknown
//! address). The content comes from `meridian_common::metadata`, the generator behind the
//! config drive, fed with the instance's build spec as it would be built now.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use meridian_common::agent::{METADATA_ADDRESS_HEADER, METADATA_NETWORK_HEADER};
use meridian_common::metadata::Metadata;

use super::agents::HostAuth;
use super::conductor::{self, ConductError};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `GET /agent/v1/metadata` (the root: EC2's version list).
pub async fn root(state: State<AppState>, auth: HostAuth, headers: HeaderMap) -> ApiResult<Response> {
    answer(state, auth, &headers, "").await
}

/// `GET /agent/v1/metadata/{*path}`.
pub async fn item(
    state: State<AppState>,
    auth: HostAuth,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    answer(state, auth, &headers, &path).await
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> ApiResult<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("The {name} header is required.")))
}

/// The one live instance on the calling host behind the request's network and address.
async fn guest(state: &AppState, auth: &HostAuth, headers: &HeaderMap) -> ApiResult<String> {
    let network = header_value(headers, METADATA_NETWORK_HEADER)?;
    // One address, as the host saw it (the proxy sets exactly one); parsed, so the lookup
    // compares the canonical form the IPAM stored.
    let address: IpAddr = header_value(headers, METADATA_ADDRESS_HEADER)?
        .parse()
        .map_err(|_| ApiError::bad_request(format!("The {METADATA_ADDRESS_HEADER} header is not one IP address.")))?;
    let not_found = || ApiError::not_found("No instance has this address on this network on this host.".to_string());
    let Some(id) = state.store.instance_by_address(network, &address.to_string(), &auth.host_id).await? else {
        tracing::info!(host = %auth.host_name, %network, %address, "metadata request from an unknown guest");
        return Err(not_found());
    };
    Ok(id)
}

/// Whether `path` is the password item of an OpenStack metadata version that has one
/// (2013-04-04, Grizzly, and later; `latest`).
fn password_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["openstack", version, "password"] => *version == "latest" || (version.len() == 10 && *version >= "2013-04-04"),
        _ => false,
    }
}

/// Nova's `MAX_SIZE` of a posted password: four chunks of 255 characters.
const PASSWORD_MAX: usize = 4 * 255;

/// `POST /agent/v1/metadata/openstack/{version}/password`: the guest posts its encrypted
/// password once (Nova's `handle_password`: 409 when one is set, 400 above 1020 bytes).
pub async fn post_item(
    State(state): State<AppState>,
    auth: HostAuth,
    headers: HeaderMap,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let id = guest(&state, &auth, &headers).await?;
    if !password_path(&path) {
        return Err(ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported here."));
    }
    if state.store.instance_password(&id).await?.is_some() {
        return Err(ApiError::conflict("A password is already set."));
    }
    if body.len() > PASSWORD_MAX {
        return Err(ApiError::bad_request("Request is too large."));
    }
    let text = String::from_utf8_lossy(&body);
    if !state.store.set_instance_password_once(&id, &text).await? {
        return Err(ApiError::conflict("A password is already set."));
    }
    Ok(axum::http::StatusCode::OK.into_response())
}

async fn answer(State(state): State<AppState>, auth: HostAuth, headers: &HeaderMap, path: &str) -> ApiResult<Response> {
    let id = guest(&state, &auth, headers).await?;
    let inst = state.store.get_instance(&id).await?;
    let host = state.store.get_host(&auth.host_id).await?;
    let spec = conductor::current_spec(&state, &inst).await.map_err(|e| match e {
        ConductError::Store(s) => ApiError::from(s),
        other => ApiError::internal(other),
    })?;
    // The instance's zone is its host's (Nova sets it at scheduling); the agent writes the
    // host's zone on the config drive too.
    let az = inst.availability_zone.clone().filter(|z| !z.is_empty()).unwrap_or(host.availability_zone);
    let mut md = Metadata::from_build_spec(&inst.id, &az, &spec).map_err(ApiError::internal)?;
    // Nova answers from the mappings it has now: volumes attached after the boot are `ebs<N>`.
    let attachments = state.store.instance_attachments(&inst.id).await?;
    md.volume_devices = attachments.into_iter().filter_map(|a| a.mountpoint).collect();
    let Some(a) = md.lookup(path) else {
        return Err(ApiError::not_found(format!("No metadata at {path:?}.")));
    };
    let body = if password_path(path) {
        state.store.instance_password(&id).await?.unwrap_or_default().into_bytes()
    } else {
        a.body
    };
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    Ok(resp)
}
