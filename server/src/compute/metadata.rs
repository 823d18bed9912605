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

async fn answer(State(state): State<AppState>, auth: HostAuth, headers: &HeaderMap, path: &str) -> ApiResult<Response> {
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
    let inst = state.store.get_instance(&id).await?;
    let host = state.store.get_host(&auth.host_id).await?;
    let spec = conductor::current_spec(&state, &inst).await.map_err(|e| match e {
        ConductError::Store(s) => ApiError::from(s),
        other => ApiError::internal(other),
    })?;
    // The instance's zone is its host's (Nova sets it at scheduling); the agent writes the
    // host's zone on the config drive too.
    let az = inst.availability_zone.clone().filter(|z| !z.is_empty()).unwrap_or(host.availability_zone);
    let md = Metadata::from_build_spec(&inst.id, &az, &spec).map_err(ApiError::internal)?;
    let Some(a) = md.lookup(path) else {
        return Err(ApiError::not_found(format!("No metadata at {path:?}.")));
    };
    let mut resp = a.body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    Ok(resp)
}
