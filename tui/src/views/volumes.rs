//! Cinder volumes: persistent disks, with the instance each is attached to. `c` creates one
//! (empty, from an image or a snapshot), `a` attaches the selected volume to an instance, `u`
//! detaches it, `E` extends it, `n` snapshots it, `U` uploads it to an image.

use ratatui::layout::Constraint;
use serde::Deserialize;
use serde_json::Value;

use meridian_common::{Client, ClientError, Session};
use reqwest::Method;
use serde_json::json;

use crate::overlays::Create;
use crate::worker::Response;

use crate::model::parse_list;
use crate::table::{CellCtx, Column, Resource, Scope, SortKey, age, col};
use crate::worker::{DeleteCall, Kind, get_all, path_segment};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Volume {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub size: u64,
    pub volume_type: Option<String>,
    /// Cinder sends `"true"`/`"false"` as strings.
    pub bootable: Value,
    pub availability_zone: Option<String>,
    pub attachments: Vec<Attachment>,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip)]
    pub raw: Value,
    /// Names of the instances it is attached to (from the compute API).
    #[serde(skip)]
    pub attached_names: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Attachment {
    pub server_id: String,
    pub device: Option<String>,
    pub attachment_id: Option<String>,
}

impl Volume {
    pub fn bootable(&self) -> bool {
        matches!(&self.bootable, Value::Bool(true)) || self.bootable.as_str() == Some("true")
    }
    /// `web-1 on /dev/vdb`, one per attachment.
    pub fn attached(&self) -> String {
        self.attachments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let who = self.attached_names.get(i).filter(|n| !n.is_empty()).cloned().unwrap_or(a.server_id.clone());
                match &a.device {
                    Some(d) => format!("{who} on {d}"),
                    None => who,
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The block storage endpoint: `block-storage` (Cinder's own type), else the `volumev3` devstack
/// also registers. It carries the project (`…/v3/{project_id}`).
pub fn endpoint(session: &Session) -> Result<String, ClientError> {
    session.endpoint("block-storage").or_else(|_| session.endpoint("volumev3"))
}

/// The service type the endpoint came from (for [`Client::send_url`]).
pub const SERVICE: &str = "block-storage";

impl Resource for Volume {
    const TITLE: &'static str = "Volumes";
    const TAB: &'static str = "Volumes";
    const COMMAND: &'static str = "volumes";
    const NOUN: &'static str = "volume";
    const KIND: Kind = Kind::Volumes;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(12)),
            col("STATUS", Constraint::Length(10)),
            col("SIZE", Constraint::Length(5)),
            col("TYPE", Constraint::Length(11)),
            col("BOOT", Constraint::Length(4)),
            col("ATTACHED TO", Constraint::Min(16)),
            col("AGE", Constraint::Length(4)),
        ];
        if ctx.all_projects {
            c.insert(c.len() - 1, col("PROJECT", Constraint::Length(10)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let mut c = vec![
            self.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| self.id.clone()),
            self.status.clone(),
            format!("{}G", self.size),
            self.volume_type.clone().unwrap_or_default(),
            if self.bootable() { "yes".into() } else { String::new() },
            self.attached(),
            age(ctx.now, self.created_at),
        ];
        if ctx.all_projects {
            c.insert(c.len() - 1, ctx.project(self.raw["os-vol-tenant-attr:tenant_id"].as_str()));
        }
        c
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        self.name.as_deref().filter(|n| !n.is_empty()).unwrap_or(&self.id)
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn status_column() -> Option<usize> {
        Some(1)
    }
    fn sort_key(&self, col: usize, ctx: &CellCtx) -> SortKey {
        match col {
            2 => SortKey::Num(self.size as f64),
            c if c == 6 + usize::from(ctx.all_projects) => {
                SortKey::Num(-(self.created_at.map(|t| t.timestamp()).unwrap_or(0) as f64))
            }
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: SERVICE, version: None, path: format!("/volumes/{}", path_segment(id)) })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = endpoint(&client.session)?;
        let q = if scope.all_projects { "?all_tenants=1" } else { "" };
        let (vols_path, servers_path) = (format!("/volumes/detail{q}"), format!("/servers{q}"));
        let (vols, servers) =
            tokio::join!(get_all(client, SERVICE, &base, &vols_path, "volumes"), client.get("compute", &servers_path),);
        let mut vols: Vec<Volume> = parse_list(&Value::Array(vols?), |v: &mut Volume, raw| v.raw = raw);
        // Names are a nicety: without the server list the IDs show.
        let servers = servers.map(|s| s["servers"].as_array().cloned().unwrap_or_default()).unwrap_or_default();
        for v in &mut vols {
            v.attached_names = v
                .attachments
                .iter()
                .map(|a| {
                    let s = servers.iter().find(|s| s["id"].as_str() == Some(&a.server_id));
                    s.and_then(|s| s["name"].as_str()).unwrap_or_default().to_string()
                })
                .collect();
        }
        Ok(vols)
    }
}

/// The microversion that extends an in-use volume (3.42), when the cloud's version document
/// (`…/v3/`, the endpoint without its project) goes that far; `None` otherwise or unreadable.
pub async fn extend_in_use_version(client: &Client, base: &str) -> Option<&'static str> {
    let root = base.trim_end_matches('/').rsplit_once('/').map(|(r, _)| format!("{r}/"))?;
    let doc = client.send_url(Method::GET, SERVICE, &root, None).await.ok()?;
    supports_extend_in_use(&doc).then_some("3.42")
}

/// Whether a Cinder version document (`{"versions": [...]}` or `{"version": {...}}`) has a v3
/// whose maximum microversion is 3.42 or later.
pub fn supports_extend_in_use(doc: &Value) -> bool {
    let docs: Vec<&Value> = match (doc["versions"].as_array(), doc.get("version")) {
        (Some(list), _) => list.iter().collect(),
        (None, Some(one)) => vec![one],
        _ => vec![],
    };
    docs.iter().filter(|d| d["id"].as_str().is_some_and(|id| id.starts_with("v3"))).any(|d| {
        let max = d["version"].as_str().unwrap_or("");
        let (major, minor) = max.split_once('.').unwrap_or(("0", "0"));
        (major.parse::<u32>().unwrap_or(0), minor.parse::<u32>().unwrap_or(0)) >= (3, 42)
    })
}

/// What the volume detail shows first: where it is attached (`web-1 on /dev/vdb`, by name when
/// the compute API gave it), put in the fields view's copy of the JSON.
pub fn with_attached_to(mut raw: Value, v: &Volume) -> Value {
    if let Some(m) = raw.as_object_mut() {
        let text = v.attached();
        m.insert("attached_to".into(), Value::String(if text.is_empty() { "-".into() } else { text }));
    }
    raw
}

/// Carries out a volume form: create (Cinder), extend / snapshot / upload (Cinder actions),
/// attach / detach (Nova's `os-volume_attachments`, which tells Cinder itself).
pub async fn act(client: &Client, c: &Create) -> Result<Response, ClientError> {
    let base = endpoint(&client.session)?;
    let action = |id: &str, body: Value| {
        let url = format!("{base}/volumes/{}/action", path_segment(id));
        async move { client.send_url(Method::POST, SERVICE, &url, Some(&body)).await }
    };
    match c {
        Create::Volume(v) => {
            let mut vol = json!({"name": v.name, "description": v.description});
            if let Some(size) = v.size_gb {
                vol["size"] = json!(size);
            }
            if !v.volume_type.is_empty() {
                vol["volume_type"] = json!(v.volume_type);
            }
            if let Some(i) = &v.image_id {
                vol["imageRef"] = json!(i);
            }
            if let Some(s) = &v.snapshot_id {
                vol["snapshot_id"] = json!(s);
            }
            if let Some(s) = &v.source_volid {
                vol["source_volid"] = json!(s);
            }
            client.send_url(Method::POST, SERVICE, &format!("{base}/volumes"), Some(&json!({"volume": vol}))).await?;
            Ok(Response::Created { kind: Kind::Volumes, name: v.name.clone() })
        }
        Create::Extend { volume, size_gb } => {
            let body = json!({"os-extend": {"new_size": size_gb}});
            // An attached volume extends only from Cinder 3.42; send it when the cloud has it
            // (other clouds answer Cinder's own 400, which the status line shows).
            let version = if volume.attached.is_some() { extend_in_use_version(client, &base).await } else { None };
            match version {
                Some(v) => {
                    let url = format!("{base}/volumes/{}/action", path_segment(&volume.id));
                    let resp = client
                        .request_url(Method::POST, SERVICE, &url)
                        .header("openstack-api-version", format!("volume {v}"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .map_err(|e| ClientError::Transport { url: url.clone(), source: e })?;
                    meridian_common::client::decode(resp).await?;
                }
                None => {
                    action(&volume.id, body).await?;
                }
            }
            Ok(Response::Did {
                kind: Kind::Volumes,
                message: format!("extending volume {} to {size_gb} GB", volume.name),
            })
        }
        Create::Attach { volume, server_id, server_name } => {
            let body = json!({"volumeAttachment": {"volumeId": volume.id}});
            client
                .post("compute", &format!("/servers/{}/os-volume_attachments", path_segment(server_id)), &body)
                .await?;
            Ok(Response::Did {
                kind: Kind::Volumes,
                message: format!("attaching volume {} to {server_name}", volume.name),
            })
        }
        Create::Detach { volume } => {
            let Some((server_id, server_name)) = &volume.attached else {
                return Err(ClientError::Decode(format!("volume {} is not attached", volume.name)));
            };
            let path =
                format!("/servers/{}/os-volume_attachments/{}", path_segment(server_id), path_segment(&volume.id));
            client.delete("compute", &path).await?;
            Ok(Response::Did {
                kind: Kind::Volumes,
                message: format!("detaching volume {} from {server_name}", volume.name),
            })
        }
        Create::VolSnapshot { volume, name, description } => {
            // An attached volume needs `force` (Cinder's word for "I know it is in use").
            let body = json!({"snapshot": {"volume_id": volume.id, "name": name, "description": description,
                "force": volume.attached.is_some()}});
            client.send_url(Method::POST, SERVICE, &format!("{base}/snapshots"), Some(&body)).await?;
            Ok(Response::Created { kind: Kind::Snapshots, name: name.clone() })
        }
        Create::ToImage { volume, image_name, disk_format } => {
            action(
                &volume.id,
                json!({"os-volume_upload_image": {"image_name": image_name, "disk_format": disk_format,
                    "container_format": "bare", "force": volume.attached.is_some()}}),
            )
            .await?;
            Ok(Response::Did {
                kind: Kind::Images,
                message: format!("uploading volume {} to image {image_name}", volume.name),
            })
        }
        _ => Err(ClientError::Decode("not a volume form".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_in_use_is_negotiated_from_the_version_document() {
        let doc =
            |v: &str| json!({"versions": [{"id": "v3.0", "status": "CURRENT", "version": v, "min_version": "3.0"}]});
        assert!(supports_extend_in_use(&doc("3.48")));
        assert!(supports_extend_in_use(&doc("3.42")));
        assert!(!supports_extend_in_use(&doc("3.41")));
        assert!(!supports_extend_in_use(&doc("3.0")));
        // Without microversions (an old Cinder), or a v2-only document: no.
        assert!(!supports_extend_in_use(&doc("")));
        assert!(!supports_extend_in_use(&json!({"versions": [{"id": "v2.0", "version": "3.60"}]})));
        assert!(supports_extend_in_use(&json!({"version": {"id": "v3.0", "version": "3.70"}})));
    }

    #[test]
    fn the_detail_names_where_a_volume_is_attached() {
        let v = Volume {
            attachments: vec![Attachment {
                server_id: "s-1".into(),
                device: Some("/dev/vdb".into()),
                attachment_id: None,
            }],
            attached_names: vec!["web-1".into()],
            ..Volume::default()
        };
        assert_eq!(with_attached_to(json!({"id": "v"}), &v)["attached_to"], "web-1 on /dev/vdb");
        assert_eq!(with_attached_to(json!({"id": "v"}), &Volume::default())["attached_to"], "-");
    }
}
