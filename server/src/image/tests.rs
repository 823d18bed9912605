//! Handler tests for Glance v2 through the whole router (`TestApp`, no socket).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use futures_util::stream;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sha2::Sha512;

use crate::state::AppState;
use crate::testing::{Reply, TestApp};

const PATCH: &str = "application/openstack-images-v2.1-json-patch";

/// Non-repeating bytes, so a truncated or reordered copy cannot match.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app.json(Method::POST, "/image/v2/images", token, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

/// A queued raw/bare image; returns its id.
async fn create_raw(app: &TestApp, token: &str, name: &str) -> String {
    let img = create(app, token, json!({"name": name, "disk_format": "raw", "container_format": "bare"})).await;
    img["id"].as_str().expect("id").to_string()
}

async fn upload(app: &TestApp, token: &str, id: &str, body: Body) -> Reply {
    app.call(
        Method::PUT,
        &format!("/image/v2/images/{id}/file"),
        Some(token),
        &[("content-type", "application/octet-stream")],
        body,
    )
    .await
}

/// The data in several chunks, as a client streaming it would send it.
fn chunked(data: &[u8], chunk: usize) -> Body {
    let parts: Vec<Result<Bytes, std::io::Error>> = data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Body::from_stream(stream::iter(parts))
}

async fn patch(app: &TestApp, token: &str, id: &str, ops: Value) -> Reply {
    app.call(
        Method::PATCH,
        &format!("/image/v2/images/{id}"),
        Some(token),
        &[("content-type", PATCH)],
        Body::from(ops.to_string()),
    )
    .await
}

async fn get(app: &TestApp, token: &str, path: &str) -> Reply {
    app.json(Method::GET, path, token, Value::Null).await
}

async fn status_of(app: &TestApp, id: &str) -> String {
    app.state.store.get_image(id).await.expect("image").status
}

/// Files in `{data_dir}/images` (including temporary ones).
fn image_files(app: &TestApp) -> Vec<String> {
    match std::fs::read_dir(app.state.cfg.data_dir.join("images")) {
        Ok(dir) => dir.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["images"].as_array().expect("images").iter().map(|i| i["id"].as_str().expect("id").to_string()).collect()
}

fn with_cap(app: &mut TestApp, cap: u64) {
    let mut cfg = (*app.state.cfg).clone();
    cfg.image_size_cap = cap;
    app.state = AppState::new(app.state.store.clone(), cfg);
}

#[tokio::test]
async fn create_shows_glance_representation() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let img = create(
        &app,
        &alice,
        json!({"name": "cirros", "disk_format": "qcow2", "container_format": "bare", "tags": ["b", "a", "a"],
               "os_distro": "cirros", "min_ram": 64}),
    )
    .await;
    let id = img["id"].as_str().expect("id");
    assert_eq!(img["status"], "queued");
    assert_eq!(img["visibility"], "shared", "Glance's default visibility");
    assert_eq!(img["protected"], false);
    assert_eq!(img["os_hidden"], false);
    assert_eq!(img["min_ram"], 64);
    assert_eq!(img["min_disk"], 0);
    assert_eq!(img["tags"], json!(["a", "b"]));
    assert_eq!(img["os_distro"], "cirros", "free-form properties are flattened");
    for key in ["checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size"] {
        assert!(img[key].is_null(), "{key}: {img}");
    }
    assert_eq!(img["self"], format!("/v2/images/{id}"));
    assert_eq!(img["file"], format!("/v2/images/{id}/file"));
    assert_eq!(img["schema"], "/v2/schemas/image");
    let created = img["created_at"].as_str().expect("created_at");
    assert_eq!(created.len(), 20, "2016-06-29T16:13:07Z format: {created}");
    assert!(created.ends_with('Z'));
    let shown = get(&app, &alice, &format!("/image/v2/images/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body, img);

    // A caller-chosen id, then the same id again.
    let chosen = "6f1e0e5a-2c4b-4f57-9a44-0d7ad1a3b0c1";
    let img = create(&app, &alice, json!({"id": chosen, "name": "x"})).await;
    assert_eq!(img["id"], chosen);
    let r = app.json(Method::POST, "/image/v2/images", &alice, json!({"id": chosen})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // Glance's fault body.
    assert_eq!(r.body["code"], "409 Conflict");
}

#[tokio::test]
async fn upload_download_round_trip() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let id = create_raw(&app, &alice, "disk").await;

    // Nothing to download yet.
    let r = get(&app, &alice, &format!("/image/v2/images/{id}/file")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let data = pattern(3 * 1024 * 1024 + 17);
    let r = upload(&app, &alice, &id, chunked(&data, 64 * 1024 + 3)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let img = get(&app, &alice, &format!("/image/v2/images/{id}")).await.body;
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], data.len());
    assert_eq!(img["virtual_size"], data.len(), "raw: virtual size = size");
    let md5 = hex::encode(Md5::digest(&data));
    let sha = hex::encode(Sha512::digest(&data));
    assert_eq!(img["checksum"], md5);
    assert_eq!(img["os_hash_algo"], "sha512");
    assert_eq!(img["os_hash_value"], sha);
    assert_eq!(image_files(&app), vec![id.clone()], "only the final file remains");

    let r = get(&app, &alice, &format!("/image/v2/images/{id}/file")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.bytes == data, "downloaded data is byte-identical");
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    assert_eq!(r.headers["content-md5"], md5.as_str());
    assert_eq!(r.headers["content-length"], data.len().to_string().as_str());

    // Byte ranges.
    let file = format!("/image/v2/images/{id}/file");
    let r = app.call(Method::GET, &file, Some(&alice), &[("range", "bytes=100-199")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes, data[100..200]);
    assert_eq!(r.headers["content-range"], format!("bytes 100-199/{}", data.len()).as_str());
    let r = app.call(Method::GET, &file, Some(&alice), &[("range", "bytes=-10")], Body::empty()).await;
    assert_eq!(r.bytes, data[data.len() - 10..]);
    let r = app.call(Method::GET, &file, Some(&alice), &[("range", "bytes=99999999-")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);

    // A second upload to an active image is a conflict; the data is untouched.
    let r = upload(&app, &alice, &id, Body::from(vec![1u8; 10])).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(std::fs::read(app.state.cfg.data_dir.join("images").join(&id)).expect("file"), data);

    // Deleting the image removes its file.
    let r = app.json(Method::DELETE, &format!("/image/v2/images/{id}"), &alice, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(image_files(&app).is_empty());
    let r = get(&app, &alice, &format!("/image/v2/images/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn upload_preconditions() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    // Formats must be set first.
    let img = create(&app, &alice, json!({"name": "no-formats"})).await;
    let id = img["id"].as_str().expect("id");
    let r = upload(&app, &alice, id, Body::from("data")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["message"].as_str().expect("msg").contains("must be set prior to saving data"), "{}", r.body);
    assert_eq!(status_of(&app, id).await, "queued");
    // Only octet-stream.
    let id = create_raw(&app, &alice, "x").await;
    let r = app
        .call(
            Method::PUT,
            &format!("/image/v2/images/{id}/file"),
            Some(&alice),
            &[("content-type", "application/json")],
            Body::from("{}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn qcow2_virtual_size_comes_from_the_header() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let img = create(&app, &alice, json!({"name": "q", "disk_format": "qcow2", "container_format": "bare"})).await;
    let id = img["id"].as_str().expect("id");
    let mut data = vec![0u8; 4096];
    data[..4].copy_from_slice(b"QFI\xfb");
    data[24..32].copy_from_slice(&(10u64 << 30).to_be_bytes());
    // Split inside the header to check it is reassembled across chunks.
    let r = upload(&app, &alice, id, chunked(&data, 5)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let img = get(&app, &alice, &format!("/image/v2/images/{id}")).await.body;
    assert_eq!(img["virtual_size"], 10u64 << 30);
    assert_eq!(img["size"], 4096);
    // Not qcow2 data, not raw: no virtual size.
    let img = create(&app, &alice, json!({"name": "v", "disk_format": "vmdk", "container_format": "bare"})).await;
    let id = img["id"].as_str().expect("id");
    upload(&app, &alice, id, Body::from(vec![7u8; 100])).await;
    let img = get(&app, &alice, &format!("/image/v2/images/{id}")).await.body;
    assert!(img["virtual_size"].is_null());
}

#[tokio::test]
async fn upload_over_the_cap_is_413_and_leaves_nothing() {
    let mut app = TestApp::new().await;
    with_cap(&mut app, 1000);
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let id = create_raw(&app, &alice, "big").await;

    // Streamed without a length: refused once the cap is passed.
    let r = upload(&app, &alice, &id, chunked(&pattern(5000), 300)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body["code"].as_str().is_some_and(|c| c.starts_with("413")), "{}", r.body);
    assert_eq!(status_of(&app, &id).await, "queued");
    assert!(image_files(&app).is_empty(), "{:?}", image_files(&app));

    // Declared too large: refused before reading.
    let r = app
        .call(
            Method::PUT,
            &format!("/image/v2/images/{id}/file"),
            Some(&alice),
            &[("content-type", "application/octet-stream"), ("content-length", "5000")],
            Body::from(vec![0u8; 5000]),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(status_of(&app, &id).await, "queued");

    // Exactly the cap is fine, and a failed upload can be retried.
    let data = pattern(1000);
    let r = upload(&app, &alice, &id, chunked(&data, 333)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(status_of(&app, &id).await, "active");
}

#[tokio::test]
async fn client_disconnect_mid_upload_resets_to_queued() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let id = create_raw(&app, &alice, "broken").await;
    let parts: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(vec![1u8; 100_000])),
        Ok(Bytes::from(vec![2u8; 100_000])),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away")),
    ];
    let r = upload(&app, &alice, &id, Body::from_stream(stream::iter(parts))).await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert_eq!(status_of(&app, &id).await, "queued");
    assert!(image_files(&app).is_empty(), "{:?}", image_files(&app));
    let img = app.state.store.get_image(&id).await.expect("image");
    assert!(img.size.is_none() && img.checksum.is_none());
}

#[tokio::test]
async fn dropped_upload_request_resets_to_queued() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let id = create_raw(&app, &alice, "stalled").await;
    // One chunk, then the client stalls; the server drops the request (as hyper does when the
    // connection closes) while the handler waits for more data.
    let first = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(vec![9u8; 50_000]))]);
    let body = Body::from_stream(futures_util::StreamExt::chain(first, stream::pending()));
    let call = upload(&app, &alice, &id, body);
    let timed = tokio::time::timeout(Duration::from_millis(500), call).await;
    assert!(timed.is_err(), "the upload cannot finish");
    // The guard's cleanup runs in the background.
    for _ in 0..100 {
        if status_of(&app, &id).await == "queued" && image_files(&app).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still {} with files {:?}", status_of(&app, &id).await, image_files(&app));
}

#[tokio::test]
async fn patch_semantics() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let img =
        create(&app, &alice, json!({"name": "old", "disk_format": "raw", "container_format": "bare", "k1": "v1"}))
            .await;
    let id = img["id"].as_str().expect("id");

    let r = patch(
        &app,
        &alice,
        id,
        json!([
            {"op": "replace", "path": "/name", "value": "new"},
            {"op": "add", "path": "/k2", "value": "v2"},
            {"op": "replace", "path": "/k1", "value": "v1b"},
            {"op": "replace", "path": "/min_ram", "value": 512},
            {"op": "replace", "path": "/min_disk", "value": 2},
            {"op": "replace", "path": "/protected", "value": true},
            {"op": "replace", "path": "/os_hidden", "value": true},
            {"op": "replace", "path": "/visibility", "value": "private"},
            {"op": "replace", "path": "/tags", "value": ["x", "y"]},
            {"op": "replace", "path": "/disk_format", "value": "qcow2"},
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["name"], "new");
    assert_eq!(b["k1"], "v1b");
    assert_eq!(b["k2"], "v2");
    assert_eq!(b["min_ram"], 512);
    assert_eq!(b["min_disk"], 2);
    assert_eq!(b["protected"], true);
    assert_eq!(b["os_hidden"], true);
    assert_eq!(b["visibility"], "private");
    assert_eq!(b["tags"], json!(["x", "y"]));
    assert_eq!(b["disk_format"], "qcow2");
    // Persisted.
    assert_eq!(get(&app, &alice, &format!("/image/v2/images/{id}")).await.body, r.body);

    let r = patch(&app, &alice, id, json!([{"op": "remove", "path": "/k2"}])).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("k2").is_none());

    let cases = [
        (json!([{"op": "remove", "path": "/k2"}]), StatusCode::CONFLICT, "Property k2 does not exist."),
        (
            json!([{"op": "replace", "path": "/nope", "value": "x"}]),
            StatusCode::CONFLICT,
            "Property nope does not exist.",
        ),
        (json!([{"op": "remove", "path": "/name"}]), StatusCode::FORBIDDEN, "Property name may not be removed."),
        (
            json!([{"op": "replace", "path": "/status", "value": "active"}]),
            StatusCode::FORBIDDEN,
            "Attribute 'status' is read-only.",
        ),
        (
            json!([{"op": "replace", "path": "/id", "value": "x"}]),
            StatusCode::FORBIDDEN,
            "Attribute 'id' is read-only.",
        ),
        (
            json!([{"op": "replace", "path": "/size", "value": 1}]),
            StatusCode::FORBIDDEN,
            "Attribute 'size' is read-only.",
        ),
        (
            json!([{"op": "replace", "path": "/checksum", "value": "x"}]),
            StatusCode::FORBIDDEN,
            "Attribute 'checksum' is read-only.",
        ),
        (
            json!([{"op": "replace", "path": "/created_at", "value": "x"}]),
            StatusCode::FORBIDDEN,
            "Attribute 'created_at' is read-only.",
        ),
        (
            json!([{"op": "add", "path": "/os_glance_x", "value": "x"}]),
            StatusCode::FORBIDDEN,
            "Attribute 'os_glance_x' is reserved.",
        ),
        (
            json!([{"op": "replace", "path": "/owner", "value": "someone"}]),
            StatusCode::FORBIDDEN,
            "Owner can't be updated by non admin.",
        ),
        (
            json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
            StatusCode::FORBIDDEN,
            "publicize_image",
        ),
        (json!([{"op": "replace", "path": "/visibility", "value": "bogus"}]), StatusCode::BAD_REQUEST, "is not one of"),
        (
            json!([{"op": "replace", "path": "/min_ram", "value": -1}]),
            StatusCode::BAD_REQUEST,
            "Cannot be a negative value",
        ),
        (
            json!([{"op": "replace", "path": "/min_ram", "value": "lots"}]),
            StatusCode::BAD_REQUEST,
            "is not of type 'integer'",
        ),
        (
            json!([{"op": "replace", "path": "/protected", "value": "yes"}]),
            StatusCode::BAD_REQUEST,
            "is not of type 'boolean'",
        ),
        (json!([{"op": "replace", "path": "/name", "value": "n".repeat(256)}]), StatusCode::BAD_REQUEST, "is too long"),
        (json!([{"op": "add", "path": "/prop", "value": 5}]), StatusCode::BAD_REQUEST, "is not of type 'string'"),
        (json!([{"op": "move", "path": "/name", "value": "x"}]), StatusCode::BAD_REQUEST, "Invalid operation"),
        (json!([{"path": "/name", "value": "x"}]), StatusCode::BAD_REQUEST, "Unable to find `op`"),
        (json!([{"op": "replace", "path": "/name"}]), StatusCode::BAD_REQUEST, "requires a member named \"value\""),
        (json!([{"op": "replace", "path": "name", "value": "x"}]), StatusCode::BAD_REQUEST, "does not start with"),
        (json!([{"op": "replace", "path": "/a/b", "value": "x"}]), StatusCode::BAD_REQUEST, "Invalid JSON pointer"),
        (json!({"op": "replace"}), StatusCode::BAD_REQUEST, "must be a JSON array"),
        (json!(["x"]), StatusCode::BAD_REQUEST, "Operations must be JSON objects"),
    ];
    for (ops, status, msg) in cases {
        let r = patch(&app, &alice, id, ops.clone()).await;
        assert_eq!(r.status, status, "{ops}: {}", r.body);
        let text = r.body["message"].as_str().unwrap_or_default();
        assert!(text.contains(msg), "{ops}: {text}");
    }
    // Nothing of the refused changes was applied.
    let now = get(&app, &alice, &format!("/image/v2/images/{id}")).await.body;
    assert_eq!(now["name"], "new");

    // Wrong content type; malformed JSON.
    let r = app
        .call(
            Method::PATCH,
            &format!("/image/v2/images/{id}"),
            Some(&alice),
            &[("content-type", "application/json")],
            Body::from("[]"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app
        .call(
            Method::PATCH,
            &format!("/image/v2/images/{id}"),
            Some(&alice),
            &[("content-type", PATCH)],
            Body::from("[{"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The v2.0 patch dialect.
    let r = app
        .call(
            Method::PATCH,
            &format!("/image/v2/images/{id}"),
            Some(&alice),
            &[("content-type", "application/openstack-images-v2.0-json-patch")],
            Body::from(json!([{"replace": "/name", "value": "v20"}]).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "v20");

    // Protected images cannot be deleted until unprotected.
    let r = app.json(Method::DELETE, &format!("/image/v2/images/{id}"), &alice, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body["message"].as_str().expect("msg").contains("is protected"));
    let r = patch(&app, &alice, id, json!([{"op": "replace", "path": "/protected", "value": false}])).await;
    assert_eq!(r.status, StatusCode::OK);

    // Formats are frozen once data is uploaded.
    let r = patch(&app, &alice, id, json!([{"op": "replace", "path": "/disk_format", "value": "raw"}])).await;
    assert_eq!(r.status, StatusCode::OK);
    upload(&app, &alice, id, Body::from(vec![1u8; 10])).await;
    let r = patch(&app, &alice, id, json!([{"op": "replace", "path": "/disk_format", "value": "qcow2"}])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body["message"].as_str().expect("msg").contains("only replaced for a queued image"));
    // Admins may change the owner.
    let r = patch(&app, &app.admin_token, id, json!([{"op": "replace", "path": "/owner", "value": "elsewhere"}])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["owner"], "elsewhere");
}

#[tokio::test]
async fn create_validation() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let cases = [
        (json!({"disk_format": "floppy"}), StatusCode::BAD_REQUEST, "is not one of"),
        (json!({"container_format": "zip"}), StatusCode::BAD_REQUEST, "is not one of"),
        (json!({"visibility": "everyone"}), StatusCode::BAD_REQUEST, "is not one of"),
        (json!({"name": "n".repeat(256)}), StatusCode::BAD_REQUEST, "is too long"),
        (json!({"min_ram": -5}), StatusCode::BAD_REQUEST, "Cannot be a negative value"),
        (json!({"min_disk": 1.5}), StatusCode::BAD_REQUEST, "is not of type 'integer'"),
        (json!({"id": "not-a-uuid"}), StatusCode::BAD_REQUEST, "does not match"),
        (json!({"protected": "true"}), StatusCode::BAD_REQUEST, "is not of type 'boolean'"),
        (json!({"tags": "a,b"}), StatusCode::BAD_REQUEST, "is not of type 'array'"),
        (json!({"custom": 1}), StatusCode::BAD_REQUEST, "is not of type 'string'"),
        (json!(["not", "an", "object"]), StatusCode::BAD_REQUEST, "is not of type 'object'"),
        (json!({"status": "active"}), StatusCode::FORBIDDEN, "Attribute 'status' is read-only."),
        (json!({"size": 5}), StatusCode::FORBIDDEN, "Attribute 'size' is read-only."),
        (json!({"self": "/x"}), StatusCode::FORBIDDEN, "Attribute 'self' is read-only."),
        (json!({"deleted": "x"}), StatusCode::FORBIDDEN, "Attribute 'deleted' is reserved."),
        (json!({"os_glance_import_task": "x"}), StatusCode::FORBIDDEN, "is reserved"),
        (json!({"visibility": "public"}), StatusCode::FORBIDDEN, "publicize_image"),
        (json!({"owner": "someone-else"}), StatusCode::FORBIDDEN, "not permitted to create images owned by"),
    ];
    for (body, status, msg) in cases {
        let r = app.json(Method::POST, "/image/v2/images", &alice, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let text = r.body["message"].as_str().unwrap_or_default();
        assert!(text.contains(msg), "{body}: {text}");
    }
    // Malformed JSON is a 400 in Glance's fault format.
    let r = app
        .call(
            Method::POST,
            "/image/v2/images",
            Some(&alice),
            &[("content-type", "application/json")],
            Body::from("{\"name\": "),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["code"], "400 Bad Request");
    // Nothing was created by the refused requests.
    let list = get(&app, &alice, "/image/v2/images").await;
    assert!(ids(&list.body).is_empty(), "{}", list.body);
    // Community images are allowed for members; admins may publish.
    let img = create(&app, &alice, json!({"visibility": "community"})).await;
    assert_eq!(img["visibility"], "community");
    let img = create(&app, &app.admin_token, json!({"visibility": "public", "owner": "other-project"})).await;
    assert_eq!(img["owner"], "other-project");
}

#[tokio::test]
async fn visibility_and_isolation_between_projects() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let carol = app.user_in_project("carol", "proj-a", "reader").await;
    let bob = app.user_in_project("bob", "proj-b", "member").await;
    let admin = app.admin_token.clone();

    let private = create(
        &app,
        &alice,
        json!({"name": "private", "visibility": "private", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let pid = private["id"].as_str().expect("id").to_string();
    let proj_a = private["owner"].as_str().expect("owner").to_string();
    upload(&app, &alice, &pid, Body::from(vec![5u8; 1000])).await;

    // Project B's member never sees project A's private image.
    let path = format!("/image/v2/images/{pid}");
    assert_eq!(get(&app, &bob, &path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, &bob, &format!("{path}/file")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        patch(&app, &bob, &pid, json!([{"op": "replace", "path": "/name", "value": "x"}])).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.json(Method::DELETE, &path, &bob, Value::Null).await.status, StatusCode::NOT_FOUND);
    assert_eq!(upload(&app, &bob, &pid, Body::from("x")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.json(Method::PUT, &format!("{path}/tags/t"), &bob, Value::Null).await.status, StatusCode::NOT_FOUND);
    let by_id = format!("?id={pid}");
    for q in ["", "?visibility=private", "?visibility=all", "?member_status=all&visibility=all", by_id.as_str()] {
        let list = get(&app, &bob, &format!("/image/v2/images{q}")).await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(!ids(&list.body).contains(&pid), "{q}: {}", list.body);
    }
    // A marker naming an invisible image is unknown.
    assert_eq!(get(&app, &bob, &format!("/image/v2/images?marker={pid}")).await.status, StatusCode::BAD_REQUEST);

    // The reader of project A reads but cannot write.
    assert_eq!(get(&app, &carol, &path).await.status, StatusCode::OK);
    assert!(ids(&get(&app, &carol, "/image/v2/images").await.body).contains(&pid));
    assert_eq!(get(&app, &carol, &format!("{path}/file")).await.bytes, vec![5u8; 1000]);
    let r = patch(&app, &carol, &pid, json!([{"op": "replace", "path": "/name", "value": "x"}])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(app.json(Method::DELETE, &path, &carol, Value::Null).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.json(Method::POST, "/image/v2/images", &carol, json!({"name": "r"})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.json(Method::PUT, &format!("{path}/tags/t"), &carol, Value::Null).await.status,
        StatusCode::FORBIDDEN
    );
    let queued = create_raw(&app, &alice, "queued").await;
    assert_eq!(upload(&app, &carol, &queued, Body::from("x")).await.status, StatusCode::FORBIDDEN);

    // The admin sees everything.
    assert_eq!(get(&app, &admin, &path).await.status, StatusCode::OK);
    assert!(ids(&get(&app, &admin, "/image/v2/images").await.body).contains(&pid));

    // Shared images: visible to members; listed by default once accepted.
    let shared = create(&app, &alice, json!({"name": "shared"})).await;
    let sid = shared["id"].as_str().expect("id").to_string();
    let spath = format!("/image/v2/images/{sid}");
    assert_eq!(get(&app, &bob, &spath).await.status, StatusCode::NOT_FOUND);
    let bob_project = {
        let r = get(&app, &admin, "/identity/v3/projects?name=proj-b").await;
        r.body["projects"][0]["id"].as_str().expect("id").to_string()
    };
    let r = app.json(Method::POST, &format!("{spath}/members"), &alice, json!({"member": bob_project})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(get(&app, &bob, &spath).await.status, StatusCode::OK, "pending members can see it");
    assert!(!ids(&get(&app, &bob, "/image/v2/images").await.body).contains(&sid));
    assert!(ids(&get(&app, &bob, "/image/v2/images?member_status=pending").await.body).contains(&sid));
    assert!(ids(&get(&app, &bob, "/image/v2/images?visibility=shared&member_status=all").await.body).contains(&sid));
    let member = format!("{spath}/members/{bob_project}");
    let r = app.json(Method::PUT, &member, &bob, json!({"status": "accepted"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "accepted");
    let listed = ids(&get(&app, &bob, "/image/v2/images").await.body);
    assert!(listed.contains(&sid) && !listed.contains(&pid));
    assert!(ids(&get(&app, &bob, "/image/v2/images?visibility=shared").await.body).contains(&sid));
    // A member reads but does not write.
    let r = patch(&app, &bob, &sid, json!([{"op": "replace", "path": "/name", "value": "x"}])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(app.json(Method::DELETE, &spath, &bob, Value::Null).await.status, StatusCode::FORBIDDEN);
    // Rejected: back out of the default list.
    app.json(Method::PUT, &member, &bob, json!({"status": "rejected"})).await;
    assert!(!ids(&get(&app, &bob, "/image/v2/images").await.body).contains(&sid));
    assert!(ids(&get(&app, &bob, "/image/v2/images?member_status=rejected").await.body).contains(&sid));

    // Community: visible to all, listed by default for the owner only.
    let community = create(&app, &alice, json!({"name": "community", "visibility": "community"})).await;
    let cid = community["id"].as_str().expect("id").to_string();
    assert_eq!(get(&app, &bob, &format!("/image/v2/images/{cid}")).await.status, StatusCode::OK);
    assert!(!ids(&get(&app, &bob, "/image/v2/images").await.body).contains(&cid));
    assert!(ids(&get(&app, &bob, "/image/v2/images?visibility=community").await.body).contains(&cid));
    assert!(ids(&get(&app, &alice, "/image/v2/images").await.body).contains(&cid));
    // ...and only the owner changes it.
    let r = patch(&app, &bob, &cid, json!([{"op": "replace", "path": "/name", "value": "x"}])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Public (admin-made): everyone lists it.
    let public = create(&app, &admin, json!({"name": "public", "visibility": "public"})).await;
    let pubid = public["id"].as_str().expect("id").to_string();
    assert!(ids(&get(&app, &bob, "/image/v2/images").await.body).contains(&pubid));
    assert!(ids(&get(&app, &bob, "/image/v2/images?visibility=public").await.body).contains(&pubid));
    assert!(!ids(&get(&app, &bob, "/image/v2/images?visibility=public").await.body).contains(&sid));
    assert_eq!(proj_a.len(), 32);
}

#[tokio::test]
async fn members_rules() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let bob = app.user_in_project("bob", "proj-b", "member").await;
    let dave = app.user_in_project("dave", "proj-d", "member").await;
    let project = |name: &'static str| {
        let app = &app;
        async move {
            let r = get(app, &app.admin_token, &format!("/identity/v3/projects?name={name}")).await;
            r.body["projects"][0]["id"].as_str().expect("id").to_string()
        }
    };
    let (proj_b, proj_d) = (project("proj-b").await, project("proj-d").await);

    // Only shared images have members.
    let private = create(&app, &alice, json!({"visibility": "private"})).await;
    let ppath = format!("/image/v2/images/{}/members", private["id"].as_str().expect("id"));
    let r = app.json(Method::POST, &ppath, &alice, json!({"member": proj_b})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body["message"].as_str().expect("msg").contains("Only shared images have members"));
    assert_eq!(get(&app, &alice, &ppath).await.status, StatusCode::FORBIDDEN);

    let shared = create(&app, &alice, json!({"name": "s"})).await;
    let id = shared["id"].as_str().expect("id").to_string();
    let members = format!("/image/v2/images/{id}/members");
    let r = app.json(Method::POST, &members, &alice, json!({"member": proj_b})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["image_id"], id.as_str());
    assert_eq!(r.body["member_id"], proj_b.as_str());
    assert_eq!(r.body["schema"], "/v2/schemas/member");
    let r = app.json(Method::POST, &members, &alice, json!({"member": proj_b})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    for (body, msg) in
        [(json!({}), "Member to be added not specified"), (json!({"member": ""}), "Member can't be empty")]
    {
        let r = app.json(Method::POST, &members, &alice, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body["message"], msg);
    }
    app.json(Method::POST, &members, &alice, json!({"member": proj_d})).await;

    // The owner sees all members; a member only itself; others nothing.
    let r = get(&app, &alice, &members).await;
    assert_eq!(r.body["members"].as_array().expect("members").len(), 2);
    assert_eq!(r.body["schema"], "/v2/schemas/members");
    let r = get(&app, &bob, &members).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["members"].as_array().expect("members").len(), 1);
    assert_eq!(r.body["members"][0]["member_id"], proj_b.as_str());
    let bob_member = format!("{members}/{proj_b}");
    assert_eq!(get(&app, &dave, &bob_member).await.status, StatusCode::NOT_FOUND, "dave can't see bob's membership");
    assert_eq!(get(&app, &bob, &bob_member).await.status, StatusCode::OK);

    // Only the member changes its status.
    let r = app.json(Method::PUT, &bob_member, &alice, json!({"status": "accepted"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = app.json(Method::PUT, &bob_member, &dave, json!({"status": "accepted"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.json(Method::PUT, &bob_member, &bob, json!({"status": "maybe"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.json(Method::PUT, &bob_member, &bob, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.json(Method::PUT, &bob_member, &bob, json!({"status": "accepted"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(get(&app, &alice, &bob_member).await.body["status"], "accepted");

    // Only the owner adds or removes members.
    let r = app.json(Method::POST, &members, &bob, json!({"member": "someone"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.json(Method::DELETE, &bob_member, &bob, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.json(Method::DELETE, &bob_member, &alice, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&app, &bob, &format!("/image/v2/images/{id}")).await.status, StatusCode::NOT_FOUND);
    let r = app.json(Method::DELETE, &bob_member, &alice, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deactivate_reactivate_and_tags() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let admin = app.admin_token.clone();
    let id = create_raw(&app, &alice, "d").await;
    let act = |what: &str| format!("/image/v2/images/{id}/actions/{what}");
    // Admins or members of the owning project (Glance's secure-RBAC default); only from active.
    let reader = app.user_in_project("rita", "proj-a", "reader").await;
    let bob = app.user_in_project("bob", "proj-b", "member").await;
    assert_eq!(app.json(Method::POST, &act("deactivate"), &reader, Value::Null).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.json(Method::POST, &act("deactivate"), &bob, Value::Null).await.status, StatusCode::NOT_FOUND);
    let r = app.json(Method::POST, &act("deactivate"), &alice, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body["message"].as_str().expect("msg").contains("in status 'queued'"));
    upload(&app, &alice, &id, Body::from(vec![3u8; 100])).await;
    assert_eq!(app.json(Method::POST, &act("deactivate"), &alice, Value::Null).await.status, StatusCode::NO_CONTENT);
    assert_eq!(status_of(&app, &id).await, "deactivated");
    assert_eq!(app.json(Method::POST, &act("deactivate"), &admin, Value::Null).await.status, StatusCode::NO_CONTENT);
    // Downloads are refused to non-admins while deactivated.
    let file = format!("/image/v2/images/{id}/file");
    assert_eq!(get(&app, &alice, &file).await.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&app, &admin, &file).await.bytes, vec![3u8; 100]);
    assert_eq!(app.json(Method::POST, &act("reactivate"), &reader, Value::Null).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.json(Method::POST, &act("reactivate"), &alice, Value::Null).await.status, StatusCode::NO_CONTENT);
    assert_eq!(status_of(&app, &id).await, "active");
    assert_eq!(get(&app, &alice, &file).await.status, StatusCode::OK);

    // Tags.
    let tag = |t: &str| format!("/image/v2/images/{id}/tags/{t}");
    assert_eq!(app.json(Method::PUT, &tag("linux"), &alice, Value::Null).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.json(Method::PUT, &tag("linux"), &alice, Value::Null).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.json(Method::PUT, &tag("x86"), &alice, Value::Null).await.status, StatusCode::NO_CONTENT);
    let img = get(&app, &alice, &format!("/image/v2/images/{id}")).await.body;
    assert_eq!(img["tags"], json!(["linux", "x86"]));
    assert!(ids(&get(&app, &alice, "/image/v2/images?tag=linux&tag=x86").await.body).contains(&id));
    assert!(ids(&get(&app, &alice, "/image/v2/images?tag=linux&tag=arm").await.body).is_empty());
    assert_eq!(app.json(Method::DELETE, &tag("linux"), &alice, Value::Null).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.json(Method::DELETE, &tag("linux"), &alice, Value::Null).await.status, StatusCode::NOT_FOUND);
    let long = "t".repeat(256);
    assert_eq!(app.json(Method::PUT, &tag(&long), &alice, Value::Null).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn listing_filters_sorting_and_pagination() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let mut made = Vec::new();
    for (i, name) in ["delta", "alpha", "echo", "charlie", "bravo"].iter().enumerate() {
        let img = create(
            &app,
            &alice,
            json!({"name": name, "disk_format": "raw", "container_format": "bare", "flavor": if i % 2 == 0 { "even" } else { "odd" }}),
        )
        .await;
        made.push(img["id"].as_str().expect("id").to_string());
        // Distinct creation times.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    upload(&app, &alice, &made[0], Body::from(vec![0u8; 500])).await;
    let hidden = create(&app, &alice, json!({"name": "hidden", "os_hidden": true})).await;
    let hidden = hidden["id"].as_str().expect("id").to_string();

    // Default: newest first, hidden images left out, no next link.
    let r = get(&app, &alice, "/image/v2/images").await;
    assert_eq!(r.body["first"], "/v2/images");
    assert_eq!(r.body["schema"], "/v2/schemas/images");
    assert!(r.body.get("next").is_none());
    let mut newest_first = made.clone();
    newest_first.reverse();
    assert_eq!(ids(&r.body), newest_first);
    assert_eq!(ids(&get(&app, &alice, "/image/v2/images?os_hidden=true").await.body), vec![hidden.clone()]);

    // Pages of two, following `next` as clients do.
    let mut url = "/v2/images?limit=2".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&app, &alice, &format!("/image{url}")).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.body);
        seen.extend(ids(&r.body));
        pages += 1;
        match r.body.get("next").and_then(Value::as_str) {
            Some(next) => {
                assert!(next.contains("limit=2") && next.contains("marker="), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first);

    // Sorting.
    let names = |body: &Value| -> Vec<String> {
        body["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let r = get(&app, &alice, "/image/v2/images?sort=name:asc").await;
    assert_eq!(names(&r.body), ["alpha", "bravo", "charlie", "delta", "echo"]);
    let r = get(&app, &alice, "/image/v2/images?sort_key=name&sort_dir=desc").await;
    assert_eq!(names(&r.body), ["echo", "delta", "charlie", "bravo", "alpha"]);
    let r = get(&app, &alice, "/image/v2/images?sort=name:asc&limit=2&marker=".to_string().as_str()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "an empty marker is unknown");
    let r = get(&app, &alice, &format!("/image/v2/images?sort=name:asc&marker={}", made[3])).await;
    assert_eq!(names(&r.body), ["delta", "echo"], "after charlie");

    // Filters.
    let r = get(&app, &alice, "/image/v2/images?name=in:alpha,echo&sort=name:asc").await;
    assert_eq!(names(&r.body), ["alpha", "echo"]);
    let r = get(&app, &alice, &format!("/image/v2/images?id=in:{},{}", made[0], made[1])).await;
    assert_eq!(ids(&r.body).len(), 2);
    let r = get(&app, &alice, "/image/v2/images?status=active").await;
    assert_eq!(ids(&r.body), vec![made[0].clone()]);
    let r = get(&app, &alice, "/image/v2/images?size_min=100&size_max=1000").await;
    assert_eq!(ids(&r.body), vec![made[0].clone()]);
    assert!(ids(&get(&app, &alice, "/image/v2/images?size_min=501").await.body).is_empty());
    // `size` is a column, not a free-form property.
    let r = get(&app, &alice, "/image/v2/images?size=500").await;
    assert_eq!(ids(&r.body), vec![made[0].clone()]);
    assert!(ids(&get(&app, &alice, "/image/v2/images?size=499").await.body).is_empty());
    let r = get(&app, &alice, "/image/v2/images?flavor=odd&sort=name:asc").await;
    assert_eq!(names(&r.body), ["alpha", "charlie"], "free-form property filter");
    let r = get(&app, &alice, "/image/v2/images?name=delta&flavor=even").await;
    assert_eq!(names(&r.body), ["delta"]);
    let r = get(&app, &alice, "/image/v2/images?created_at=gt:2000-01-01T00:00:00Z").await;
    assert_eq!(ids(&r.body).len(), 5);
    let r = get(&app, &alice, "/image/v2/images?updated_at=lt:2000-01-01T00:00:00Z").await;
    assert!(ids(&r.body).is_empty());
    let r = get(&app, &alice, "/image/v2/images?limit=1&name=in:alpha,echo").await;
    let next = r.body["next"].as_str().expect("next");
    assert!(next.starts_with("/v2/images?limit=1&name=in%3Aalpha%2Cecho&marker="), "{next}");
    assert_eq!(r.body["first"], "/v2/images?limit=1&name=in%3Aalpha%2Cecho");
}

#[tokio::test]
async fn bad_list_queries_are_400_naming_the_parameter() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let cases = [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("sort_key=color", "sort key"),
        ("sort_dir=up", "sort direction"),
        ("sort=name:sideways", "sort direction"),
        ("sort=name&sort_key=name", "cannot be combined"),
        ("sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc", "sort dirs"),
        ("visibility=everyone", "visibility"),
        ("member_status=maybe", "status"),
        ("os_hidden=maybe", "os_hidden"),
        ("protected=perhaps", "protected"),
        ("size_min=big", "size_min"),
        ("size_max=1e3", "size_max"),
        ("min_ram=lots", "min_ram"),
        ("created_at=gt:yesterday", "created_at"),
        ("updated_at=about:2020-01-01T00:00:00Z", "operator"),
        ("name=like:foo", "operator"),
        ("marker=00000000-0000-0000-0000-000000000000", "No image found"),
        ("changes-since=2020-01-01", "changes-since"),
    ];
    for (q, needle) in cases {
        let r = get(&app, &alice, &format!("/image/v2/images?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.body);
        let msg = r.body["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{q}: {msg}");
    }
    // Large limits are clamped, not refused.
    assert_eq!(get(&app, &alice, "/image/v2/images?limit=5000").await.status, StatusCode::OK);
    // No token: keystonemiddleware's 401.
    let r = app.call(Method::GET, "/image/v2/images", None, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn schemas_are_served() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let r = get(&app, &alice, "/image/v2/schemas/image").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "image");
    assert_eq!(r.body["additionalProperties"]["type"], "string");
    assert!(r.body["properties"]["disk_format"]["enum"].as_array().expect("enum").contains(&json!("qcow2")));
    let r = get(&app, &alice, "/image/v2/schemas/images").await;
    assert_eq!(r.body["name"], "images");
    assert_eq!(r.body["properties"]["images"]["items"]["name"], "image");
    assert_eq!(get(&app, &alice, "/image/v2/schemas/member").await.body["name"], "member");
    assert_eq!(get(&app, &alice, "/image/v2/schemas/members").await.body["name"], "members");
}

#[tokio::test]
async fn import_info_lists_no_methods() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let r = get(&app, &alice, "/image/v2/info/import").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["import-methods"]["value"], json!([]));
}

#[tokio::test]
async fn empty_image_id_is_404_not_the_listing() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    create_raw(&app, &alice, "x").await;
    // `images/` + an empty id: Glance has no such route.
    let r = get(&app, &alice, "/image/v2/images/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = app.json(Method::DELETE, "/image/v2/images/", &alice, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The listing itself, and the version document with its slash, are unchanged.
    assert_eq!(ids(&get(&app, &alice, "/image/v2/images").await.body).len(), 1);
    assert_eq!(get(&app, &alice, "/image/").await.status, StatusCode::MULTIPLE_CHOICES);
}

/// A body fed by the test, chunk by chunk.
fn fed_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    (tx, Body::from_stream(stream))
}

#[tokio::test]
async fn concurrent_upload_conflicts_and_delete_during_upload_is_410() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let id = create_raw(&app, &alice, "racy").await;
    let (tx, body) = fed_body();
    let first = upload(&app, &alice, &id, body);
    let other = async {
        tx.send(Bytes::from(vec![1u8; 1000])).await.expect("send");
        while status_of(&app, &id).await != "saving" {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A second upload while the first is saving.
        let r = upload(&app, &alice, &id, Body::from(vec![2u8; 10])).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        // The image is deleted mid-upload; the upload then finishes.
        let r = app.json(Method::DELETE, &format!("/image/v2/images/{id}"), &alice, Value::Null).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        tx.send(Bytes::from(vec![3u8; 1000])).await.expect("send");
        drop(tx);
    };
    let (r, ()) = tokio::join!(first, other);
    assert_eq!(r.status, StatusCode::GONE, "{}", r.body);
    assert!(image_files(&app).is_empty(), "{:?}", image_files(&app));
}

#[tokio::test]
async fn json_and_patch_bodies_over_the_limit_are_413_glance_faults() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "proj-a", "member").await;
    let big = json!({ "name": "x".repeat(3 << 20) }).to_string();
    let r = app
        .call(Method::POST, "/image/v2/images", Some(&alice), &[("content-type", "application/json")], Body::from(big))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(r.body["code"], "413 Payload Too Large", "{}", r.body);
    assert_eq!(r.body["message"], "Request is too large.");

    // The JSON-patch body has the same cap (it was read whole, up to axum's 2 MB default).
    let id = create_raw(&app, &alice, "patched").await;
    let ops = json!([{ "op": "replace", "path": "/name", "value": "x".repeat((3 << 20) / 2) }]).to_string();
    let r = app
        .call(
            Method::PATCH,
            &format!("/image/v2/images/{id}"),
            Some(&alice),
            &[("content-type", "application/openstack-images-v2.1-json-patch")],
            chunked(ops.as_bytes(), 64 * 1024),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body["code"].as_str().is_some_and(|c| c.starts_with("413")), "{}", r.body);
    assert_eq!(get(&app, &alice, &format!("/image/v2/images/{id}")).await.body["name"], "patched");
}
