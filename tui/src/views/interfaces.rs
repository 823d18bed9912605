//! An instance's network interfaces (`os-interface`) and, for admins, its diagnostics
//! (`/servers/{id}/diagnostics`, the 2.48 form): the Interfaces tab of the instance detail. `i`
//! attaches a port (a new one on a network, or an existing free port) and `I` detaches one, as
//! `openstack server add port` / `remove port` do. Diagnostics are read on demand (`m`), never
//! polled.

use ratatui::text::{Line, Span};
use serde::Deserialize;
use serde_json::{Value, json};

use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::overlays::Create;
use crate::theme::Theme;
use crate::worker::{Kind, Response, path_segment};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Interface {
    pub port_id: String,
    pub net_id: String,
    pub mac_addr: String,
    pub port_state: String,
    pub fixed_ips: Vec<FixedIpRow>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct FixedIpRow {
    pub ip_address: String,
    pub subnet_id: String,
}

impl Interface {
    pub fn ips(&self) -> String {
        self.fixed_ips.iter().map(|f| f.ip_address.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// The instance's interfaces.
pub async fn list(client: &Client, server_id: &str) -> Result<Vec<Interface>, ClientError> {
    let v = client.get("compute", &format!("/servers/{}/os-interface", path_segment(server_id))).await?;
    Ok(parse_list(&v["interfaceAttachments"], |_: &mut Interface, _| {}))
}

/// The instance's diagnostics as the cloud gives them (admins; 2.48 has a fixed form).
pub async fn diagnostics(client: &Client, server_id: &str) -> Result<Value, ClientError> {
    client.get("compute", &format!("/servers/{}/diagnostics", path_segment(server_id))).await
}

/// Attaches or detaches a port from the add/remove port forms.
pub async fn act(client: &Client, c: &Create) -> Result<Response, ClientError> {
    match c {
        Create::AddPort { server_id, server_name, network_id, port_id } => {
            let mut a = json!({});
            if let Some(p) = port_id {
                a["port_id"] = json!(p);
            } else if let Some(n) = network_id {
                a["net_id"] = json!(n);
            }
            let path = format!("/servers/{}/os-interface", path_segment(server_id));
            let made = client.post("compute", &path, &json!({ "interfaceAttachment": a })).await?;
            let port = made["interfaceAttachment"]["port_id"].as_str().unwrap_or_default();
            Ok(Response::Did { kind: Kind::Ports, message: format!("attached port {port} to {server_name}") })
        }
        Create::RemovePort { server_id, server_name, port_id } => {
            let path = format!("/servers/{}/os-interface/{}", path_segment(server_id), path_segment(port_id));
            client.delete("compute", &path).await?;
            Ok(Response::Did { kind: Kind::Ports, message: format!("detaching port {port_id} from {server_name}") })
        }
        _ => Err(ClientError::Decode("not a port form".into())),
    }
}

/// The Interfaces tab's lines: one row per interface, then the diagnostics when asked for.
pub fn lines(
    interfaces: Option<&[Interface]>,
    networks: &dyn Fn(&str) -> String,
    diagnostics: Option<&Result<Value, String>>,
    theme: &Theme,
) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    match interfaces {
        None => out.push(Line::from(Span::styled("loading the interfaces…", theme.muted()))),
        Some([]) => out.push(Line::from(Span::styled("no interfaces", theme.muted()))),
        Some(list) => {
            out.push(Line::from(Span::styled(
                format!("{:<38} {:<14} {:<18} {:<18} {}", "PORT", "NETWORK", "IPS", "MAC", "STATE"),
                theme.header(),
            )));
            for i in list {
                let net = networks(&i.net_id);
                out.push(Line::raw(format!(
                    "{:<38} {:<14} {:<18} {:<18} {}",
                    i.port_id,
                    if net.is_empty() { i.net_id.clone() } else { net },
                    i.ips(),
                    i.mac_addr,
                    i.port_state
                )));
            }
        }
    }
    out.push(Line::default());
    match diagnostics {
        None => out.push(Line::from(Span::styled("diagnostics: press M (admins)", theme.muted()))),
        Some(Err(e)) => out.push(Line::from(Span::styled(format!("diagnostics: {e}"), theme.error()))),
        Some(Ok(d)) => out.extend(diagnostics_lines(d, theme)),
    }
    out
}

fn num(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The 2.48 diagnostics in words: state and uptime, memory, then one line per CPU, NIC and disk.
/// An older cloud's free-form dictionary is shown as its keys and values.
pub fn diagnostics_lines(d: &Value, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = vec![Line::from(Span::styled("Diagnostics", theme.accent()))];
    let kv = |k: &str, v: String| Line::from(vec![Span::styled(format!("  {k:<10} "), theme.muted()), Span::raw(v)]);
    if d.get("state").is_none() {
        // Before 2.48 the shape is the hypervisor's own.
        if let Some(m) = d.as_object() {
            for (k, v) in m {
                out.push(kv(k, num(v)));
            }
        }
        return out;
    }
    out.push(kv(
        "state",
        format!("{} · driver {} · uptime {} s", num(&d["state"]), num(&d["driver"]), num(&d["uptime"])),
    ));
    out.push(kv(
        "memory",
        format!("{} MB max, {} MB used", num(&d["memory_details"]["maximum"]), num(&d["memory_details"]["used"])),
    ));
    for c in d["cpu_details"].as_array().into_iter().flatten() {
        out.push(kv(
            &format!("cpu {}", num(&c["id"])),
            format!("time {} ns, utilisation {}", num(&c["time"]), num(&c["utilisation"])),
        ));
    }
    for n in d["nic_details"].as_array().into_iter().flatten() {
        out.push(kv(
            "nic",
            format!(
                "{} rx {} B / {} pkts, tx {} B / {} pkts, drops {}/{}, errors {}/{}",
                num(&n["mac_address"]),
                num(&n["rx_octets"]),
                num(&n["rx_packets"]),
                num(&n["tx_octets"]),
                num(&n["tx_packets"]),
                num(&n["rx_drop"]),
                num(&n["tx_drop"]),
                num(&n["rx_errors"]),
                num(&n["tx_errors"]),
            ),
        ));
    }
    for (i, x) in d["disk_details"].as_array().into_iter().flatten().enumerate() {
        out.push(kv(
            &format!("disk {i}"),
            format!(
                "read {} B in {} requests, written {} B in {} requests, errors {}",
                num(&x["read_bytes"]),
                num(&x["read_requests"]),
                num(&x["write_bytes"]),
                num(&x["write_requests"]),
                num(&x["errors_count"]),
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line]) -> String {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn diagnostics_read_in_words() {
        let d = json!({"state": "running", "driver": "libvirt", "uptime": 46, "memory_details": {"maximum": 512, "used": 0},
            "cpu_details": [{"id": 0, "time": 1000, "utilisation": null}],
            "nic_details": [{"mac_address": "fa:16:3e:00:00:01", "rx_octets": 10, "rx_packets": 1, "tx_octets": 20,
                "tx_packets": 2, "rx_drop": 0, "tx_drop": 0, "rx_errors": 0, "tx_errors": 0}],
            "disk_details": [{"read_bytes": 1, "read_requests": 2, "write_bytes": 3, "write_requests": 4, "errors_count": 0}]});
        let t = text(&diagnostics_lines(&d, &Theme::dark()));
        assert!(t.contains("running · driver libvirt · uptime 46 s"), "{t}");
        assert!(t.contains("512 MB max"), "{t}");
        assert!(t.contains("cpu 0") && t.contains("utilisation -"), "{t}");
        assert!(t.contains("fa:16:3e:00:00:01 rx 10 B"), "{t}");
        assert!(t.contains("read 1 B in 2 requests, written 3 B in 4 requests"), "{t}");
        let old = text(&diagnostics_lines(&json!({"cpu0_time": 5}), &Theme::dark()));
        assert!(old.contains("cpu0_time") && old.contains('5'), "{old}");
    }
}
