//! Faults: an agent killed mid-build, and the server killed during 50 concurrent builds.
//! Nothing may be lost or stuck: every instance ends ACTIVE, or ERROR with a fault.

use meridian_common::Client;
use meridian_e2e::{Agent, Server, prepare_cloud, wait_server};
use serde_json::{Value, json};

async fn admin_client(server: &Server) -> Client {
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    let pid = admin.session.project_id().expect("project").to_string();
    let quota = json!({"quota_set": {"instances": 1000, "cores": 1000, "ram": 10_000_000}});
    admin.put("compute", &format!("/os-quota-sets/{pid}"), &quota).await.expect("quota");
    admin
}

async fn service_states(admin: &Client) -> Vec<(String, String)> {
    let s = admin.get("compute", "/os-services?binary=nova-compute").await.expect("services");
    s["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            (x["host"].as_str().unwrap_or_default().to_string(), x["state"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

async fn wait_until<F: Fn(&[(String, String)]) -> bool>(admin: &Client, pred: F) {
    for _ in 0..600 {
        if pred(&service_states(admin).await) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("services never reached the expected state: {:?}", service_states(admin).await);
}

#[tokio::test]
async fn agent_killed_mid_build_is_marked_down_and_its_builds_rescheduled() {
    let server = Server::start_opts(None, &["--host-down-after", "4"]);
    let mut c1 = Agent::start(&server, "c1");
    let _c2 = Agent::start(&server, "c2");
    let admin = admin_client(&server).await;
    let cloud = prepare_cloud(&admin).await;
    wait_until(&admin, |s| s.iter().filter(|(_, st)| st == "up").count() == 2).await;

    // c1 dies while it still looks healthy: builds sent to it never come back.
    c1.kill9();
    let body = json!({"server": {"name": "orphan", "imageRef": cloud.image_id, "flavorRef": "42",
        "networks": [{"uuid": cloud.network_id}], "min_count": 6, "max_count": 6}});
    admin.post("compute", "/servers", &body).await.expect("boot");
    let list = admin.get("compute", "/servers/detail?name=^orphan").await.expect("list");
    let ids: Vec<String> =
        list["servers"].as_array().expect("list").iter().filter_map(|s| s["id"].as_str().map(str::to_string)).collect();
    assert_eq!(ids.len(), 6);

    wait_until(&admin, |s| s.iter().any(|(h, st)| h == "c1" && st == "down")).await;
    let hyp = admin.get("compute", "/os-hypervisors").await.expect("hypervisors");
    let c1_state = hyp["hypervisors"]
        .as_array()
        .expect("list")
        .iter()
        .find(|h| h["hypervisor_hostname"] == "c1")
        .map(|h| h["state"].clone());
    assert_eq!(c1_state, Some(json!("down")));

    let mut rescheduled = 0;
    for id in &ids {
        let s = wait_server(&admin, id, &["ACTIVE", "ERROR"], 120).await;
        assert_eq!(s["status"], "ACTIVE", "{s}");
        assert_eq!(s["OS-EXT-SRV-ATTR:host"], "c2", "only c2 is alive");
        let t = admin.get("compute", &format!("/servers/{id}/os-meridian-timeline")).await.expect("timeline");
        let schedulings =
            t["timeline"].as_array().expect("rows").iter().filter(|r| r["task_state"] == "scheduling").count();
        if schedulings > 1 {
            rescheduled += 1;
        }
    }
    assert!(rescheduled >= 1, "at least one build went to c1 first and was rescheduled");
    // The dead host holds no claims any more.
    let detail = admin.get("compute", "/os-hypervisors/detail").await.expect("detail");
    let c1 = detail["hypervisors"]
        .as_array()
        .expect("list")
        .iter()
        .find(|h| h["hypervisor_hostname"] == "c1")
        .cloned()
        .expect("c1");
    assert_eq!(c1["memory_mb_used"], 0, "{c1}");
}

#[tokio::test]
async fn server_killed_during_fifty_builds_loses_nothing() {
    let mut server = Server::start();
    let _c1 = Agent::start(&server, "c1");
    let _c2 = Agent::start(&server, "c2");
    let admin = admin_client(&server).await;
    let cloud = prepare_cloud(&admin).await;
    wait_until(&admin, |s| s.iter().filter(|(_, st)| st == "up").count() == 2).await;

    // 50 concurrent boots; the server dies once some are accepted and others are in flight.
    let accepted_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (admin, image, net) = (admin.clone(), cloud.image_id.clone(), cloud.network_id.clone());
        let counter = accepted_so_far.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"server": {"name": format!("storm{i:02}"), "imageRef": image, "flavorRef": "42", "networks": [{"uuid": net}]}});
            let id = admin.post("compute", "/servers", &body).await.ok().and_then(|r| r["server"]["id"].as_str().map(str::to_string));
            if id.is_some() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            id
        }));
    }
    while accepted_so_far.load(std::sync::atomic::Ordering::SeqCst) < 15 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill9();
    let mut accepted = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.expect("join") {
            accepted.push(id);
        }
    }
    server.restart();

    // Every server the API ever stored, accepted or not, ends ACTIVE or ERROR with a fault.
    let admin = Client::login(&server.creds("admin", meridian_e2e::ADMIN_PASSWORD, "admin")).await.expect("login");
    let list = admin.get("compute", "/servers/detail?name=^storm").await.expect("list");
    let stored: Vec<Value> = list["servers"].as_array().cloned().unwrap_or_default();
    for id in &accepted {
        assert!(stored.iter().any(|s| s["id"] == id.as_str()), "accepted server {id} was lost");
    }
    for s in &stored {
        let id = s["id"].as_str().expect("id");
        let fin = wait_server(&admin, id, &["ACTIVE", "ERROR"], 120).await;
        if fin["status"] == "ERROR" {
            assert!(fin["fault"]["message"].is_string(), "ERROR without a fault: {fin}");
        }
        assert!(fin["OS-EXT-STS:task_state"].is_null(), "{fin}");
    }
    assert!(accepted.len() >= 15 && accepted.len() < 50, "the kill must land mid-storm: {}", accepted.len());
    eprintln!("accepted {} of 50 before the kill; {} stored; all settled", accepted.len(), stored.len());
}
