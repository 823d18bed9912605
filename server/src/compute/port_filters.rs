//! `GET /agent/v1/hosts/{host}/port-filters?after=GEN&wait=SECS`: what a host's agent enforces
//! on its guests' ports ([`HostFilters`]), long-polled on the store's filter generation.
//!
//! Each port's rules are the union of its groups' rules; a remote group becomes the list of
//! its members' addresses (fixed IPs and allowed address pairs) of the rule's family. The
//! whole answer is built from a fixed number of statements ([`Store::host_filter_data`]).
//!
//! [`Store::host_filter_data`]: crate::store::Store::host_filter_data

use std::time::Duration;

use axum::extract::{Path, State};
use meridian_common::agent::{AddressPair, Direction, EtherType, FilterRule, HostFilters, PortFilter};
use serde_json::Value;

use super::agents::HostAuth;
use crate::error::ApiResult;
use crate::extract::Query;
use crate::state::AppState;
use crate::store::security_groups::{HostFilterData, Rule, protocol_number};

/// The longest a poll waits (an agent asking for more gets this).
const MAX_WAIT_SECS: u64 = 60;

pub async fn poll(
    State(state): State<AppState>,
    auth: HostAuth,
    Path(host): Path<String>,
    q: Query,
) -> ApiResult<axum::Json<HostFilters>> {
    auth.check_host(&host)?;
    let after = q.uint("after")?.and_then(|a| u64::try_from(a).ok());
    let wait = q.uint("wait")?.and_then(|w| u64::try_from(w).ok()).unwrap_or(25).min(MAX_WAIT_SECS);
    let mut changes = state.store.watch_filters();
    let current = *changes.borrow_and_update();
    if after == Some(current) {
        // Nothing new for this agent: wait for the next change, the deadline or shutdown.
        tokio::select! {
            _ = tokio::time::timeout(Duration::from_secs(wait), changes.changed()) => {}
            () = state.shutdown.cancelled() => {}
        }
    }
    Ok(axum::Json(host_filters(&state, &auth.host_id).await?))
}

/// The filters of every port of every instance placed on host `host_id`, as of now.
pub async fn host_filters(state: &AppState, host_id: &str) -> ApiResult<HostFilters> {
    // Read the generation first: a change that lands while the data is read moves it again,
    // so the agent asks once more rather than keeping stale rules.
    let generation = state.store.filter_generation();
    let data = state.store.host_filter_data(host_id).await?;
    Ok(HostFilters { generation, ports: build(&data) })
}

/// Turns the stored rows into the wire form.
pub fn build(data: &HostFilterData) -> Vec<PortFilter> {
    data.ports
        .iter()
        .map(|p| {
            let enabled = p.port_security_enabled != 0;
            let pairs: Vec<Value> = serde_json::from_str(&p.allowed_address_pairs).unwrap_or_default();
            let allowed_address_pairs = pairs
                .iter()
                .filter_map(|v| {
                    Some(AddressPair {
                        ip_address: v.get("ip_address")?.as_str()?.to_string(),
                        mac_address: v
                            .get("mac_address")
                            .and_then(Value::as_str)
                            .unwrap_or(p.mac_address.as_str())
                            .to_string(),
                    })
                })
                .collect();
            let mut rules: Vec<FilterRule> = Vec::new();
            if enabled {
                for g in data.groups.get(&p.id).into_iter().flatten() {
                    let Some((stateful, group_rules)) = data.rules.get(g) else { continue };
                    for r in group_rules {
                        let rule = filter_rule(r, *stateful, data);
                        if !rules.contains(&rule) {
                            rules.push(rule);
                        }
                    }
                }
            }
            PortFilter {
                port_id: p.id.clone(),
                instance_id: p.device_id.clone(),
                network_id: p.network_id.clone(),
                mac_address: p.mac_address.clone(),
                fixed_ips: data.fixed_ips.get(&p.id).cloned().unwrap_or_default(),
                allowed_address_pairs,
                port_security_enabled: enabled,
                rules,
            }
        })
        .collect()
}

fn filter_rule(r: &Rule, stateful: bool, data: &HostFilterData) -> FilterRule {
    let v6 = r.ethertype == "IPv6";
    let family = |a: &String| a.contains(':') == v6;
    let remote = if let Some(g) = &r.remote_group_id {
        // Members' addresses of the rule's family; none yet matches nobody.
        Some(data.members.get(g).into_iter().flatten().filter(|a| family(a)).cloned().collect())
    } else {
        r.remote_ip_prefix
            .as_deref()
            .and_then(|p| p.parse::<ipnet::IpNet>().ok())
            .map(|n| n.trunc())
            // "Anywhere" is no restriction at all.
            .filter(|n| n.prefix_len() != 0)
            .map(|n| vec![n.to_string()])
    };
    let port = |v: Option<i64>| v.and_then(|v| u16::try_from(v).ok());
    FilterRule {
        direction: if r.direction == "egress" { Direction::Egress } else { Direction::Ingress },
        ethertype: if v6 { EtherType::IPv6 } else { EtherType::IPv4 },
        protocol: r.protocol.as_deref().and_then(protocol_number),
        port_range_min: port(r.port_range_min),
        port_range_max: port(r.port_range_max),
        remote,
        stateful,
    }
}
