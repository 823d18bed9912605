//! The unmodified `openstack` CLI making server images on a real agent (libvirt
//! `test:///default`, real qemu-img): `server image create --wait`, `server backup create`,
//! `server shelve`, `server shelve --offload` and `server unshelve --wait`, with every state
//! transition on the way read from the server's event stream (what `/servers/detail` shows).

use std::time::Duration;

use futures_util::StreamExt;
use meridian_common::Client;
use meridian_common::sse::SseParser;
use meridian_e2e::{Agent, Cli, Server, prepare_cloud, wait_hosts_up};
use serde_json::Value;

/// The server's transitions, read from `os-meridian-events` as they happen.
struct Walk {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    seen: Vec<(String, String)>,
}

impl Walk {
    async fn open(client: &Client) -> Walk {
        let resp = client
            .request(reqwest::Method::GET, "compute", "/os-meridian-events")
            .expect("url")
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("connect");
        assert!(resp.status().is_success());
        Walk { body: resp.bytes_stream().boxed(), parser: SseParser::new(None), seen: Vec::new() }
    }

    /// Transitions of server `id` (vm_state, task_state or `-`) until one lands on `vm` with
    /// no task; returns them all and starts afresh.
    async fn until(&mut self, id: &str, vm: &str) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if self.seen.last().is_some_and(|(v, t)| v == vm && t == "-") {
                return std::mem::take(&mut self.seen);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("{id} never reached {vm}: {:?}", self.seen))
                .expect("stream ended")
                .expect("read");
            for e in self.parser.feed(&chunk) {
                let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                if e.event == "transition" && data["server_id"] == id {
                    self.seen.push((
                        data["vm_state"].as_str().unwrap_or_default().to_string(),
                        data["task_state"].as_str().unwrap_or("-").to_string(),
                    ));
                }
            }
        }
    }
}

fn w(steps: &[(&str, &str)]) -> Vec<(String, String)> {
    steps.iter().map(|(v, t)| (v.to_string(), t.to_string())).collect()
}

fn image_of(cli: &Cli, name: &str) -> Value {
    cli.json(&["image", "show", name])
}

/// Glance's free-form properties as the CLI shows them (a dict, or a "k='v', …" string).
fn property(img: &Value, key: &str) -> Option<String> {
    match &img["properties"] {
        Value::Object(o) => o.get(key).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())),
        Value::String(s) => {
            s.split(", ").find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(|v| v.trim_matches('\'').to_string()))
        }
        _ => img.get(key).and_then(Value::as_str).map(str::to_string),
    }
}

#[tokio::test]
async fn snapshot_backup_shelve_and_unshelve_with_the_cli() {
    // Shelved servers stay on their host until offloaded by hand (Nova's -1).
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[compute]\nshelved_offload_time = -1\n").expect("config");
    let server = Server::start_opts(None, &["--config", config.to_str().expect("path")]);
    let _c1 = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let cli = server.admin_cli();
    let created =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.nano", "--network", "net", "vm1"]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let id = created["id"].as_str().expect("id").to_string();

    // Snapshot: the image is active with the disk's bytes when --wait returns.
    let mut walk = Walk::open(&admin).await;
    let img = cli.json(&["server", "image", "create", "--wait", "--name", "snap1", "vm1"]);
    assert_eq!(
        walk.until(&id, "active").await,
        w(&[
            ("active", "image_snapshot_pending"),
            ("active", "image_snapshot"),
            ("active", "image_pending_upload"),
            ("active", "image_uploading"),
            ("active", "-"),
        ])
    );
    let img = image_of(&cli, img["id"].as_str().expect("image id"));
    assert_eq!((img["status"].as_str(), img["disk_format"].as_str()), (Some("active"), Some("qcow2")), "{img}");
    assert!(img["size"].as_i64().is_some_and(|n| n > 1024 * 1024), "the 1 MiB of data in a qcow2: {img}");
    assert_eq!(property(&img, "image_type").as_deref(), Some("snapshot"), "{img}");
    assert_eq!(property(&img, "instance_uuid").as_deref(), Some(id.as_str()), "{img}");
    // A server boots from the snapshot.
    let second =
        cli.json(&["server", "create", "--wait", "--image", "snap1", "--flavor", "m1.nano", "--network", "net", "vm2"]);
    assert_eq!(second["status"], "ACTIVE", "{second}");
    cli.run(&["server", "delete", "--wait", "vm2"]);

    // Backups with rotation 1: the second replaces the first.
    let mut walk = Walk::open(&admin).await;
    cli.run(&["server", "backup", "create", "--wait", "--name", "bk1", "--type", "daily", "--rotate", "1", "vm1"]);
    assert_eq!(
        walk.until(&id, "active").await,
        w(&[
            ("active", "image_backup"),
            ("active", "image_pending_upload"),
            ("active", "image_uploading"),
            ("active", "-")
        ])
    );
    let first = image_of(&cli, "bk1");
    assert_eq!(property(&first, "backup_type").as_deref(), Some("daily"), "{first}");
    let mut walk = Walk::open(&admin).await;
    cli.run(&["server", "backup", "create", "--wait", "--name", "bk2", "--type", "daily", "--rotate", "1", "vm1"]);
    walk.until(&id, "active").await;
    let names: Vec<String> = cli
        .json(&["image", "list"])
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["Name"].as_str().map(str::to_string))
        .collect();
    assert!(names.contains(&"bk2".to_string()) && !names.contains(&"bk1".to_string()), "{names:?}");

    // Shelve (kept on the host), unshelve (a power on).
    let mut walk = Walk::open(&admin).await;
    cli.run(&["server", "shelve", "--wait", "vm1"]);
    assert_eq!(
        walk.until(&id, "shelved").await,
        w(&[
            ("active", "shelving"),
            ("active", "shelving_image_pending_upload"),
            ("active", "shelving_image_uploading"),
            ("shelved", "-"),
        ])
    );
    let s = cli.json(&["server", "show", "vm1"]);
    assert_eq!(s["status"], "SHELVED", "{s}");
    assert!(names_now(&cli).contains(&"vm1-shelved".to_string()));
    let mut walk = Walk::open(&admin).await;
    cli.run(&["server", "unshelve", "--wait", "vm1"]);
    assert_eq!(walk.until(&id, "active").await, w(&[("shelved", "powering-on"), ("active", "-")]));
    assert!(!names_now(&cli).contains(&"vm1-shelved".to_string()), "the shelved image is deleted");

    // Shelve with offload: the host lets go; unshelve schedules it anew from the image.
    let mut walk = Walk::open(&admin).await;
    cli.run(&["server", "shelve", "--offload", "--wait", "vm1"]);
    assert_eq!(
        walk.until(&id, "shelved_offloaded").await,
        w(&[
            ("active", "shelving"),
            ("active", "shelving_image_pending_upload"),
            ("active", "shelving_image_uploading"),
            ("shelved", "-"),
            ("shelved", "shelving_offloading"),
            ("shelved_offloaded", "-"),
        ])
    );
    let s = cli.json(&["server", "show", "vm1"]);
    assert_eq!(s["status"], "SHELVED_OFFLOADED", "{s}");
    assert!(s["OS-EXT-SRV-ATTR:host"].is_null() || s["OS-EXT-SRV-ATTR:host"] == "", "{s}");
    let addresses = s["addresses"].clone();
    let mut walk = Walk::open(&admin).await;
    cli.run(&["server", "unshelve", "--wait", "vm1"]);
    assert_eq!(
        walk.until(&id, "active").await,
        w(&[("shelved_offloaded", "unshelving"), ("shelved_offloaded", "spawning"), ("active", "-")])
    );
    let s = cli.json(&["server", "show", "vm1"]);
    assert_eq!((s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()), (Some("ACTIVE"), Some("c1")), "{s}");
    assert_eq!(s["addresses"], addresses, "same ports and addresses");
    assert!(!names_now(&cli).contains(&"vm1-shelved".to_string()));

    let events = cli.json(&["server", "event", "list", "vm1"]);
    let actions: Vec<&str> = events.as_array().expect("list").iter().filter_map(|e| e["Action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "unshelve",
            "shelveOffload",
            "shelve",
            "unshelve",
            "shelve",
            "createBackup",
            "createBackup",
            "createImage",
            "create"
        ],
        "{events}"
    );
    cli.run(&["server", "delete", "--wait", "vm1"]);
}

fn names_now(cli: &Cli) -> Vec<String> {
    cli.json(&["image", "list"])
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["Name"].as_str().map(str::to_string))
        .collect()
}
