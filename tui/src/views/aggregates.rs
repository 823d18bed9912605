//! Host aggregates (`os-aggregates`, admins): groups of compute hosts, optionally exposed as an
//! availability zone, with free-form metadata. `c` creates one (name, optional zone), `a` adds or
//! removes hosts (picked from the hypervisors) and sets the zone, `m` edits the metadata (sets,
//! changes and removes keys in one `set_metadata`), `ctrl-d` deletes it.

use ratatui::layout::Constraint;
use serde::Deserialize;
use serde_json::{Value, json};

use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::overlays::Create;
use crate::table::{CellCtx, Column, Resource, Scope, SortKey, col};
use crate::worker::{DeleteCall, Kind, Response, path_segment};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Aggregate {
    /// Nova's aggregate IDs are integers.
    pub id: Value,
    pub name: String,
    pub availability_zone: Option<String>,
    pub hosts: Vec<String>,
    pub metadata: serde_json::Map<String, Value>,
    #[serde(skip)]
    pub raw: Value,
    /// `id` as text (the table's row key).
    #[serde(skip)]
    pub key: String,
}

impl Aggregate {
    /// The metadata as (key, value) pairs for the editor, the zone's key included (Nova keeps
    /// the zone there and `set_metadata` may change it).
    pub fn metadata_pairs(&self) -> Vec<(String, String)> {
        self.metadata.iter().map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string))).collect()
    }

    /// Metadata as `k=v` pairs, the zone's own key left out (it has its column).
    pub fn metadata_text(&self) -> String {
        self.metadata
            .iter()
            .filter(|(k, _)| k.as_str() != "availability_zone")
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Resource for Aggregate {
    const TITLE: &'static str = "Host aggregates";
    const TAB: &'static str = "Aggregates";
    const COMMAND: &'static str = "aggregates";
    const NOUN: &'static str = "aggregate";
    const ADMIN_ONLY: bool = true;
    const KIND: Kind = Kind::Aggregates;
    fn columns(_: &CellCtx) -> Vec<Column> {
        vec![
            col("NAME", Constraint::Min(14)),
            col("ZONE", Constraint::Length(12)),
            col("HOSTS", Constraint::Min(16)),
            col("METADATA", Constraint::Min(16)),
        ]
    }
    fn cells(&self, _: &CellCtx) -> Vec<String> {
        vec![
            self.name.clone(),
            self.availability_zone.clone().unwrap_or_default(),
            self.hosts.join(", "),
            self.metadata_text(),
        ]
    }
    fn id(&self) -> &str {
        &self.key
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn sort_key(&self, col: usize, ctx: &CellCtx) -> SortKey {
        match col {
            2 => SortKey::Num(self.hosts.len() as f64),
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "compute", version: None, path: format!("/os-aggregates/{}", path_segment(id)) })
    }
    async fn list(client: &Client, _scope: Scope) -> Result<Vec<Self>, ClientError> {
        let v = client.get("compute", "/os-aggregates").await?;
        Ok(parse_list(&v["aggregates"], |a: &mut Aggregate, raw| {
            a.key = a.id.as_str().map_or_else(|| a.id.to_string(), str::to_string);
            a.raw = raw;
        }))
    }
}

/// Carries out an aggregate form: create (with its zone), delete is the generic one; hosts added
/// and removed with the `add_host` / `remove_host` actions, the zone set with an update.
pub async fn act(client: &Client, c: &Create) -> Result<Response, ClientError> {
    match c {
        Create::Aggregate { name, zone } => {
            let mut a = json!({ "name": name });
            if let Some(z) = zone {
                a["availability_zone"] = json!(z);
            }
            client.post("compute", "/os-aggregates", &json!({ "aggregate": a })).await?;
            Ok(Response::Created { kind: Kind::Aggregates, name: name.clone() })
        }
        Create::AggregateHosts { id, name, add, remove, zone } => {
            let path = format!("/os-aggregates/{}", path_segment(id));
            let mut done = Vec::new();
            for h in add {
                client.post("compute", &format!("{path}/action"), &json!({"add_host": {"host": h}})).await?;
                done.push(format!("added {h}"));
            }
            for h in remove {
                client.post("compute", &format!("{path}/action"), &json!({"remove_host": {"host": h}})).await?;
                done.push(format!("removed {h}"));
            }
            if let Some(z) = zone {
                // An empty zone takes the aggregate out of any zone (Nova's null).
                let az = if z.is_empty() { Value::Null } else { json!(z) };
                client.put("compute", &path, &json!({"aggregate": {"availability_zone": az}})).await?;
                done.push(if z.is_empty() { "no zone".into() } else { format!("zone {z}") });
            }
            Ok(Response::Did { kind: Kind::Aggregates, message: format!("aggregate {name}: {}", done.join("; ")) })
        }
        Create::AggregateMeta { id, name, set, unset } => {
            let mut metadata = serde_json::Map::new();
            for (k, v) in set {
                metadata.insert(k.clone(), json!(v));
            }
            // Nova removes a key given as null.
            for k in unset {
                metadata.insert(k.clone(), Value::Null);
            }
            let path = format!("/os-aggregates/{}/action", path_segment(id));
            client.post("compute", &path, &json!({"set_metadata": {"metadata": metadata}})).await?;
            let mut done: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
            done.extend(unset.iter().map(|k| format!("{k} removed")));
            Ok(Response::Did { kind: Kind::Aggregates, message: format!("aggregate {name}: {}", done.join(", ")) })
        }
        _ => Err(ClientError::Decode("not an aggregate form".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_leaves_the_zone_to_its_column() {
        let mut a: Aggregate = serde_json::from_value(json!({"id": 3, "name": "fast", "availability_zone": "az1",
            "hosts": ["h1", "h2"], "metadata": {"availability_zone": "az1", "ssd": "true"}}))
        .expect("aggregate");
        a.key = a.id.to_string();
        assert_eq!(a.key, "3");
        assert_eq!(a.metadata_text(), "ssd=true");
        assert_eq!(a.hosts.join(", "), "h1, h2");
    }
}
