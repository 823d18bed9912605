//! `os-volume_upload_image`: a volume becomes a Glance image. The server makes the image
//! (`queued`) and moves the volume to `uploading` with the agent's work in one step; the agent
//! converts the bytes (qcow2 when asked) and sends them to `PUT /agent/v1/images/{id}/file`,
//! which stores them as Glance's upload does (the image ends `active`). The work's outcome
//! returns the volume to where it was; a failure removes the image (`work.rs`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_common::agent::Action;
use serde_json::{Value, json};

use super::volumes::bad;
use super::work;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::image::Image;
use crate::store::volume::Volume;
use crate::store::{flag, new_uuid, now};

/// What the agent can write (Cinder accepts more; these are the ones converted here).
const DISK_FORMATS: [&str; 2] = ["raw", "qcow2"];
const VISIBILITIES: [&str; 4] = ["public", "private", "shared", "community"];

fn str_arg<'a>(args: &'a Value, key: &str) -> ApiResult<Option<&'a str>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(format!("Invalid value for '{key}': {other}"))),
    }
}

fn bool_of(args: &Value, key: &str) -> ApiResult<bool> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => {
            crate::extract::parse_bool(s).ok_or_else(|| bad(format!("Invalid value for '{key}': '{s}'")))
        }
        Some(other) => Err(bad(format!("Invalid value for '{key}': '{other}'"))),
    }
}

/// Starts the upload and answers Cinder's 202 body.
pub(crate) async fn start(state: &AppState, ctx: &Ctx, v: &Volume, args: &Value) -> ApiResult<Response> {
    if !args.is_object() {
        return Err(bad("Malformed request body"));
    }
    let image_name = str_arg(args, "image_name")?.ok_or_else(|| bad("No image_name was specified in request."))?;
    let force = bool_of(args, "force")?;
    let disk_format = str_arg(args, "disk_format")?.unwrap_or("raw").to_ascii_lowercase();
    if !DISK_FORMATS.contains(&disk_format.as_str()) {
        return Err(bad(format!(
            "Invalid disk-format '{disk_format}' is specified. Allowed disk-formats are {}.",
            DISK_FORMATS.join(", ")
        )));
    }
    let container_format = str_arg(args, "container_format")?.unwrap_or("bare").to_string();
    if container_format != "bare" {
        return Err(bad(format!(
            "Invalid container-format '{container_format}' is specified. Allowed container-formats are bare."
        )));
    }
    let visibility = str_arg(args, "visibility")?.unwrap_or("private").to_string();
    if !VISIBILITIES.contains(&visibility.as_str()) {
        return Err(bad(format!("Invalid input received: Invalid visibility value: {visibility}")));
    }
    let protected = bool_of(args, "protected")?;
    let from: &[&str] = if force { &["available", "in-use"] } else { &["available"] };
    let refused = || bad(format!("Invalid volume: Volume {} status must be {}", v.id, from.join(" or ")));
    if !from.contains(&v.status.as_str()) {
        return Err(refused());
    }
    let Some(host) = v.host_id.clone() else { return Err(refused()) };
    let ts = now();
    let img = Image {
        id: new_uuid(),
        name: Some(image_name.to_string()),
        status: "queued".into(),
        visibility: visibility.clone(),
        protected: flag(protected),
        owner: Some(ctx.project_id()?.to_string()),
        disk_format: Some(disk_format.clone()),
        container_format: Some(container_format.clone()),
        properties: "{}".into(),
        created_at: ts.clone(),
        updated_at: ts,
        ..Default::default()
    };
    state.store.create_image(&img).await?;
    let action =
        Action::VolumeUploadImage { volume: work::spec(v), image_id: img.id.clone(), disk_format: disk_format.clone() };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    let d = work::deadline(work::UPLOAD_DEADLINE);
    let begun = state.store.begin_volume_work(&v.id, from, "uploading", &d, &host, &action).await;
    if !matches!(begun, Ok(true)) {
        // The volume changed meanwhile: no upload, so no image.
        work::remove_image(state, &img.id).await;
        begun?;
        return Err(refused());
    }
    state.signals.notify(&host);
    let vt = state.store.find_volume_type(&v.volume_type_id).await?;
    let extra: Value = serde_json::from_str(&vt.extra_specs).unwrap_or_else(|_| json!({}));
    let body = json!({"os-volume_upload_image": {
        "id": v.id,
        "updated_at": now(),
        "status": "uploading",
        "display_description": v.description,
        "size": v.size,
        "volume_type": {
            "id": vt.id,
            "name": vt.name,
            "description": vt.description,
            "is_public": vt.is_public != 0,
            "extra_specs": extra,
            "qos_specs_id": null,
            "deleted": false,
            "deleted_at": null,
            "created_at": vt.created_at,
            "updated_at": vt.updated_at,
        },
        "image_id": img.id,
        "container_format": container_format,
        "disk_format": disk_format,
        "image_name": image_name,
    }});
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}
