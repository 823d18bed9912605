//! Compute end to end: the real server and two real agents on libvirt's `test:///default`.
//! Boots spread by the RAM weigher, exact state walks, no-valid-host faults, no overcommit.

use meridian_common::Client;
use meridian_e2e::{Agent, Cloud, Server, prepare_cloud, wait_hosts_up, wait_server};
use serde_json::{Value, json};

async fn cloud_with_two_agents() -> (Server, Agent, Agent, Client, Cloud) {
    let server = Server::start();
    let a1 = Agent::start(&server, "c1");
    let a2 = Agent::start(&server, "c2");
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    let cloud = prepare_cloud(&admin).await;
    let pid = admin.session.project_id().expect("project").to_string();
    let quota = json!({"quota_set": {"instances": 1000, "cores": 1000, "ram": 10_000_000}});
    admin.put("compute", &format!("/os-quota-sets/{pid}"), &quota).await.expect("quota");
    wait_hosts_up(&admin, 2).await;
    (server, a1, a2, admin, cloud)
}

async fn boot(client: &Client, cloud: &Cloud, name: &str, flavor: &str, count: u32) -> String {
    let body = json!({"server": {
        "name": name, "imageRef": cloud.image_id, "flavorRef": flavor,
        "networks": [{"uuid": cloud.network_id}], "min_count": count, "max_count": count,
    }});
    let r = client.post("compute", "/servers", &body).await.expect("boot");
    r["server"]["id"].as_str().expect("id").to_string()
}

async fn servers_named(client: &Client, prefix: &str) -> Vec<Value> {
    let l = client.get("compute", &format!("/servers/detail?name=^{prefix}")).await.expect("list");
    l["servers"].as_array().cloned().unwrap_or_default()
}

async fn flavor(admin: &Client, name: &str, ram: u32) -> String {
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": name, "ram": ram, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    f["flavor"]["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn twenty_boots_spread_by_the_ram_weigher() {
    let (_server, _a1, _a2, admin, cloud) = cloud_with_two_agents().await;
    boot(&admin, &cloud, "spread", "42", 20).await;
    let mut ids = Vec::new();
    for s in servers_named(&admin, "spread-").await {
        ids.push(s["id"].as_str().expect("id").to_string());
    }
    assert_eq!(ids.len(), 20);
    let mut per_host = std::collections::BTreeMap::new();
    for id in &ids {
        let s = wait_server(&admin, id, &["ACTIVE", "ERROR"], 120).await;
        assert_eq!(s["status"], "ACTIVE", "{s}");
        *per_host.entry(s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    // Equal hosts, RAM weigher spreading: each decision goes to the emptier host.
    assert_eq!(per_host.get("c1"), Some(&10), "{per_host:?}");
    assert_eq!(per_host.get("c2"), Some(&10), "{per_host:?}");
    let hyp = admin.get("compute", "/os-hypervisors/detail").await.expect("hypervisors");
    for h in hyp["hypervisors"].as_array().expect("list") {
        assert_eq!(h["memory_mb_used"], 10 * 128, "{h}");
        assert_eq!(h["running_vms"], 10);
    }
}

/// The (vm_state, task_state) pairs of the timeline, consecutive duplicates folded.
async fn walk(admin: &Client, id: &str) -> Vec<(String, Option<String>)> {
    walk_path(admin, &format!("/servers/{id}/os-meridian-timeline")).await
}

async fn walk_path(admin: &Client, path: &str) -> Vec<(String, Option<String>)> {
    let t = admin.get("compute", path).await.expect("timeline");
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for row in t["timeline"].as_array().expect("rows") {
        let pair =
            (row["vm_state"].as_str().unwrap_or_default().to_string(), row["task_state"].as_str().map(str::to_string));
        if out.last() != Some(&pair) {
            out.push(pair);
        }
    }
    out
}

fn pairs(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    list.iter().map(|(v, t)| (v.to_string(), t.map(str::to_string))).collect()
}

async fn act(admin: &Client, id: &str, body: Value) {
    admin.post("compute", &format!("/servers/{id}/action"), &body).await.expect("action");
}

#[tokio::test]
async fn every_action_walks_novas_states() {
    let (_server, _a1, _a2, admin, cloud) = cloud_with_two_agents().await;
    let id = boot(&admin, &cloud, "walker", "42", 1).await;
    wait_server(&admin, &id, &["ACTIVE"], 60).await;
    let mut want = vec![
        ("building", Some("scheduling")),
        ("building", Some("networking")),
        ("building", Some("block_device_mapping")),
        ("building", Some("spawning")),
        ("active", None),
    ];
    assert_eq!(walk(&admin, &id).await, pairs(&want), "boot");

    act(&admin, &id, json!({"os-stop": null})).await;
    let s = wait_server(&admin, &id, &["SHUTOFF"], 60).await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    want.extend([("active", Some("powering-off")), ("stopped", None)]);
    assert_eq!(walk(&admin, &id).await, pairs(&want), "stop");

    // Not allowed while stopped: a 409 in Nova's words.
    let err = admin
        .post("compute", &format!("/servers/{id}/action"), &json!({"reboot": {"type": "SOFT"}}))
        .await
        .expect_err("409");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409));
    assert!(err.to_string().contains("while it is in vm_state stopped"), "{err}");

    act(&admin, &id, json!({"os-start": null})).await;
    wait_for_task_none(&admin, &id, "ACTIVE").await;
    want.extend([("stopped", Some("powering-on")), ("active", None)]);
    assert_eq!(walk(&admin, &id).await, pairs(&want), "start");

    act(&admin, &id, json!({"reboot": {"type": "SOFT"}})).await;
    wait_for_task_none(&admin, &id, "ACTIVE").await;
    want.extend([
        ("active", Some("rebooting")),
        ("active", Some("reboot_pending")),
        ("active", Some("reboot_started")),
        ("active", None),
    ]);
    assert_eq!(walk(&admin, &id).await, pairs(&want), "soft reboot");

    act(&admin, &id, json!({"reboot": {"type": "HARD"}})).await;
    wait_for_task_none(&admin, &id, "ACTIVE").await;
    want.extend([
        ("active", Some("rebooting_hard")),
        ("active", Some("reboot_pending_hard")),
        ("active", Some("reboot_started_hard")),
        ("active", None),
    ]);
    assert_eq!(walk(&admin, &id).await, pairs(&want), "hard reboot");

    let actions = admin.get("compute", &format!("/servers/{id}/os-instance-actions")).await.expect("actions");
    let names: Vec<&str> =
        actions["instanceActions"].as_array().expect("list").iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(names, ["reboot", "reboot", "start", "stop", "create"]);
    let req = actions["instanceActions"][4]["request_id"].as_str().expect("req");
    let create = admin.get("compute", &format!("/servers/{id}/os-instance-actions/{req}")).await.expect("action");
    assert_eq!(create["instanceAction"]["events"][0]["result"], "Success", "{create}");

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], 60).await;
    want.extend([("active", Some("deleting")), ("deleted", None)]);
    assert_eq!(walk_deleted(&admin, &id).await, pairs(&want), "delete");
    let ports = admin.get("network", &format!("/v2.0/ports?device_id={id}")).await.expect("ports");
    assert_eq!(ports["ports"], json!([]), "the server's port went with it");
}

async fn wait_for_task_none(admin: &Client, id: &str, status: &str) {
    for _ in 0..600 {
        let s = admin.get("compute", &format!("/servers/{id}")).await.expect("show");
        if s["server"]["status"] == status && s["server"]["OS-EXT-STS:task_state"].is_null() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{id} did not settle in {status}");
}

/// A deleted server is 404 to everyone; admins still list it with `deleted=true` and read its
/// timeline the same way.
async fn walk_deleted(admin: &Client, id: &str) -> Vec<(String, Option<String>)> {
    let l = admin.get("compute", "/servers/detail?deleted=true&all_tenants=1").await.expect("deleted list");
    let row = l["servers"].as_array().expect("list").iter().find(|s| s["id"] == id).cloned().expect("deleted row");
    assert_eq!(row["status"], "DELETED");
    walk_path(admin, &format!("/servers/{id}/os-meridian-timeline?deleted=true")).await
}

#[tokio::test]
async fn a_boot_that_fits_nowhere_ends_in_error_with_a_fault() {
    let (_server, _a1, _a2, admin, cloud) = cloud_with_two_agents().await;
    let huge = flavor(&admin, "huge", 64 * 1024).await;
    let id = boot(&admin, &cloud, "nofit", &huge, 1).await;
    let s = wait_server(&admin, &id, &["ERROR", "ACTIVE"], 60).await;
    assert_eq!(s["status"], "ERROR");
    assert_eq!(s["fault"]["code"], 500);
    assert!(s["fault"]["message"].as_str().expect("msg").starts_with("No valid host was found"), "{s}");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], Value::Null);
    // Nothing stays claimed, and the ERROR server deletes cleanly.
    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], 30).await;
}

#[tokio::test]
async fn concurrent_boots_never_overcommit() {
    let (_server, _a1, _a2, admin, cloud) = cloud_with_two_agents().await;
    // 2560 MB per host at RAM ratio 1.0: two 1024 MB guests fit on each, four in all.
    let big = flavor(&admin, "big", 1024).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (admin, image, net, big) = (admin.clone(), cloud.image_id.clone(), cloud.network_id.clone(), big.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"server": {"name": format!("oc{i}"), "imageRef": image, "flavorRef": big, "networks": [{"uuid": net}]}});
            admin.post("compute", "/servers", &body).await.expect("boot")["server"]["id"].as_str().expect("id").to_string()
        }));
    }
    let mut active = 0;
    let mut error = 0;
    for t in tasks {
        let id = t.await.expect("join");
        let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], 120).await;
        if s["status"] == "ACTIVE" {
            active += 1;
        } else {
            assert!(s["fault"]["message"].as_str().unwrap_or_default().contains("No valid host"), "{s}");
            error += 1;
        }
    }
    assert_eq!((active, error), (4, 4));
    let hyp = admin.get("compute", "/os-hypervisors/detail").await.expect("hypervisors");
    for h in hyp["hypervisors"].as_array().expect("list") {
        assert!(h["memory_mb_used"].as_i64() <= h["memory_mb"].as_i64(), "overcommitted: {h}");
        assert_eq!(h["memory_mb_used"], 2048, "{h}");
    }
}

/// The agent API's credentials with real agents: each holds its own (0600 in its state dir);
/// the join token and the other host's credential get nothing.
#[tokio::test]
async fn agents_hold_their_own_credentials() {
    use std::os::unix::fs::PermissionsExt as _;
    let (server, a1, a2, _admin, _cloud) = cloud_with_two_agents().await;
    let (c1, c2) = (a1.credential().expect("c1's credential"), a2.credential().expect("c2's credential"));
    assert_ne!(c1, c2);
    for a in [&a1, &a2] {
        let mode = std::fs::metadata(a.credential_file()).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", a.host);
    }
    let join = std::fs::read_to_string(server.data_dir.join("agent-token")).expect("join token");
    let http = reqwest::Client::new();
    let poll = |host: &str, bearer: &str| {
        http.get(format!("{}/agent/v1/hosts/{host}/work?wait=0", server.url)).bearer_auth(bearer.trim()).send()
    };
    assert_eq!(poll("c1", &join).await.expect("poll").status(), 401, "the join token leases nothing");
    assert_eq!(poll("c1", &c2).await.expect("poll").status(), 403, "c2 cannot lease c1's work");
    assert_eq!(poll("c1", &c1).await.expect("poll").status(), 200);
}
