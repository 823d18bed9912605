//! The dashboard's worker against the real server and agents on libvirt's `test:///default`:
//! server groups (created, listed with members by name, a wizard launch of two instances with
//! the group hint landing on different hosts, deleted), host aggregates (created in a zone, a
//! host added, the zone changed, deleted), the overview's usage after a server ran, and an
//! instance's interfaces attached, detached and its diagnostics read. Every wait has a
//! deadline that only guards against hangs.

use std::time::Duration;

use meridian_e2e::worker::admin_worker;
use meridian_e2e::{Agent, Server, prepare_cloud, wait_hosts_up, wait_server};
use meridian_tui::overlays::Create;
use meridian_tui::worker::{Kind, LaunchSpec, Listing, Request, Response};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// The worker's next response that is not live-tracking chatter; a failure panics with its words.
async fn next(ui: &mut UnboundedReceiver<Response>) -> Response {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(30), ui.recv()).await.expect("a response").expect("open");
        match r {
            Response::LiveMode(_) | Response::ServerUpdate(_) => {}
            Response::Failed { message, .. } => panic!("{message}"),
            other => return other,
        }
    }
}

async fn listed(worker: &UnboundedSender<Request>, ui: &mut UnboundedReceiver<Response>, kind: Kind) -> Listing {
    worker.send(Request::List(kind)).expect("send");
    loop {
        if let Response::Listed(l) = next(ui).await
            && l.kind() == kind
        {
            return l;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_groups_through_the_worker_and_a_wizard_launch_into_one() {
    let server = Server::start();
    let _a = Agent::start(&server, "grp-host-a");
    let _b = Agent::start(&server, "grp-host-b");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 2).await;
    let (worker, mut ui) = admin_worker(&server).await;

    let create = Create::ServerGroup { name: "apart".into(), policy: "anti-affinity".into(), max_per_host: Some(1) };
    worker.send(Request::Create(create)).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Created { kind: Kind::ServerGroups, .. }));
    let Listing::ServerGroups(groups) = listed(&worker, &mut ui, Kind::ServerGroups).await else { unreachable!() };
    let g = groups.iter().find(|g| g.name == "apart").expect("listed").clone();
    assert_eq!(
        (g.policy(), g.rules_text(), g.members.len()),
        ("anti-affinity".into(), "max_server_per_host=1".into(), 0)
    );

    // The wizard's spec with the group: two instances, two hosts.
    let spec = LaunchSpec {
        name: "spread".into(),
        count: 2,
        image_id: cloud.image_id.clone(),
        flavor_id: "1".into(),
        network_ids: vec![cloud.network_id.clone()],
        key_name: None,
        user_data: None,
        security_groups: vec![],
        boot_volume_gb: None,
        server_group: Some(g.id.clone()),
    };
    worker.send(Request::Launch(spec)).expect("send");
    let launched = loop {
        if let Response::Launched(s) = next(&mut ui).await {
            break s;
        }
    };
    assert_eq!(launched.len(), 2, "{launched:?}");
    let mut hosts = Vec::new();
    for s in &launched {
        let v = wait_server(&admin, &s.id, &["ACTIVE", "ERROR"], 120).await;
        assert_eq!(v["status"], "ACTIVE", "{v}");
        hosts.push(v["OS-EXT-SRV-ATTR:host"].as_str().expect("host").to_string());
    }
    hosts.sort();
    assert_eq!(hosts, ["grp-host-a", "grp-host-b"], "anti-affinity puts them on different hosts");
    let Listing::ServerGroups(groups) = listed(&worker, &mut ui, Kind::ServerGroups).await else { unreachable!() };
    let g = groups.iter().find(|x| x.name == "apart").expect("listed").clone();
    let mut names = g.member_names.clone();
    names.sort();
    assert_eq!(names, ["spread-1", "spread-2"], "members by name: {:?}", g.raw);

    for s in &launched {
        worker.send(Request::Action { id: s.id.clone(), op: meridian_tui::worker::ServerOp::Delete }).expect("send");
        assert!(matches!(next(&mut ui).await, Response::Accepted { .. }));
    }
    worker.send(Request::Delete { kind: Kind::ServerGroups, id: g.id.clone(), name: g.name.clone() }).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Deleted { kind: Kind::ServerGroups, .. }));
    let gone = admin.get("compute", &format!("/os-server-groups/{}", g.id)).await;
    assert_eq!(gone.expect_err("deleted").status(), Some(reqwest::StatusCode::NOT_FOUND));
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregates_through_the_worker() {
    let server = Server::start();
    let _a = Agent::start(&server, "agg-host");
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let (worker, mut ui) = admin_worker(&server).await;

    worker
        .send(Request::Create(Create::Aggregate { name: "fast".into(), zone: Some("az-fast".into()) }))
        .expect("send");
    assert!(matches!(next(&mut ui).await, Response::Created { kind: Kind::Aggregates, .. }));
    let Listing::Aggregates(aggs) = listed(&worker, &mut ui, Kind::Aggregates).await else { unreachable!() };
    let a = aggs.iter().find(|a| a.name == "fast").expect("listed").clone();
    assert_eq!(a.availability_zone.as_deref(), Some("az-fast"));

    let change = |add: Vec<String>, remove: Vec<String>, zone: Option<String>| {
        Request::Create(Create::AggregateHosts { id: a.key.clone(), name: a.name.clone(), add, remove, zone })
    };
    worker.send(change(vec!["agg-host".into()], vec![], None)).expect("send");
    match next(&mut ui).await {
        Response::Did { kind: Kind::Aggregates, message } => assert!(message.contains("added agg-host"), "{message}"),
        other => panic!("expected the host added, got {other:?}"),
    }
    let Listing::Aggregates(aggs) = listed(&worker, &mut ui, Kind::Aggregates).await else { unreachable!() };
    let now = aggs.iter().find(|x| x.key == a.key).expect("listed");
    assert_eq!(
        (now.hosts.clone(), now.availability_zone.clone()),
        (vec!["agg-host".to_string()], Some("az-fast".into()))
    );
    // The host's zone is the aggregate's.
    let zones = admin.get("compute", "/os-availability-zone/detail").await.expect("zones");
    let fast = zones["availabilityZoneInfo"].as_array().expect("zones").iter().find(|z| z["zoneName"] == "az-fast");
    assert!(fast.is_some_and(|z| z["hosts"].get("agg-host").is_some()), "{zones}");

    // Metadata: set two keys, then change one and remove the other in one request; read back
    // through the API. A key Nova's schema refuses comes back in the cloud's words.
    let meta = |set: &[(&str, &str)], unset: &[&str]| {
        Request::Create(Create::AggregateMeta {
            id: a.key.clone(),
            name: a.name.clone(),
            set: set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            unset: unset.iter().map(|k| k.to_string()).collect(),
        })
    };
    let shown = || async {
        let v = admin.get("compute", &format!("/os-aggregates/{}", a.key)).await.expect("show");
        v["aggregate"]["metadata"].clone()
    };
    worker.send(meta(&[("ssd", "true"), ("gpu", "nvidia")], &[])).expect("send");
    match next(&mut ui).await {
        Response::Did { kind: Kind::Aggregates, message } => {
            assert_eq!(message, "aggregate fast: ssd=true, gpu=nvidia");
        }
        other => panic!("expected the metadata set, got {other:?}"),
    }
    assert_eq!(shown().await, json!({"availability_zone": "az-fast", "ssd": "true", "gpu": "nvidia"}));
    worker.send(meta(&[("ssd", "false")], &["gpu"])).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Did { kind: Kind::Aggregates, .. }));
    assert_eq!(shown().await, json!({"availability_zone": "az-fast", "ssd": "false"}));
    let Listing::Aggregates(aggs) = listed(&worker, &mut ui, Kind::Aggregates).await else { unreachable!() };
    let now = aggs.iter().find(|x| x.key == a.key).expect("listed");
    assert_eq!(now.metadata_text(), "ssd=false");
    let long = "k".repeat(256);
    worker.send(meta(&[(long.as_str(), "v")], &[])).expect("send");
    match meridian_e2e::worker::next(&mut ui).await {
        Response::Failed { message, .. } => {
            assert!(message.contains("does not match any of the regexes") && message.ends_with("(400)"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(shown().await, json!({"availability_zone": "az-fast", "ssd": "false"}), "nothing changed");

    worker.send(change(vec![], vec!["agg-host".into()], Some("az-slow".into()))).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Did { kind: Kind::Aggregates, .. }));
    let Listing::Aggregates(aggs) = listed(&worker, &mut ui, Kind::Aggregates).await else { unreachable!() };
    let now = aggs.iter().find(|x| x.key == a.key).expect("listed");
    assert_eq!((now.hosts.len(), now.availability_zone.as_deref()), (0, Some("az-slow")));

    worker.send(Request::Delete { kind: Kind::Aggregates, id: a.key.clone(), name: a.name.clone() }).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Deleted { kind: Kind::Aggregates, .. }));
    let Listing::Aggregates(aggs) = listed(&worker, &mut ui, Kind::Aggregates).await else { unreachable!() };
    assert!(aggs.is_empty(), "{aggs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_interfaces_and_diagnostics_through_the_worker() {
    let server = Server::start();
    let _a = Agent::start(&server, "if-host");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let net2 = admin
        .post("network", "/v2.0/networks", &serde_json::json!({"network": {"name": "net2"}}))
        .await
        .expect("network")["network"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let subnet = serde_json::json!({"subnet": {"network_id": net2, "cidr": "10.79.0.0/24", "ip_version": 4}});
    admin.post("network", "/v2.0/subnets", &subnet).await.expect("subnet");
    let body = serde_json::json!({"server": {"name": "ifvm", "imageRef": cloud.image_id, "flavorRef": "1",
        "networks": [{"uuid": cloud.network_id}]}});
    let sid =
        admin.post("compute", "/servers", &body).await.expect("boot")["server"]["id"].as_str().expect("id").to_string();
    let s = wait_server(&admin, &sid, &["ACTIVE", "ERROR"], 120).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let (worker, mut ui) = admin_worker(&server).await;

    // Usage: the server that ran this month counts, with its flavor's vCPU hours.
    worker.send(Request::Overview).expect("send");
    let o = loop {
        if let Response::Overview(o) = next(&mut ui).await {
            break o;
        }
    };
    let p = o.usage.project.clone().expect("Meridian has the usage API").expect("usage");
    assert_eq!(p.count, 1, "{o:?}");
    assert!(p.vcpu_hours > 0.0 && p.ram_gb_hours > 0.0, "{p:?}");
    let all = o.usage.all_projects.clone().expect("an admin's totals");
    assert_eq!(all.count, 1, "{all:?}");

    let interfaces = |worker: &UnboundedSender<Request>| worker.send(Request::Interfaces(sid.clone())).expect("send");
    interfaces(&worker);
    let Response::Interfaces { interfaces: first, .. } = next(&mut ui).await else { panic!("interfaces") };
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].net_id, cloud.network_id);
    assert!(first[0].ips().starts_with("10.77."), "{first:?}");

    let add = Create::AddPort {
        server_id: sid.clone(),
        server_name: "ifvm".into(),
        network_id: Some(net2.clone()),
        port_id: None,
    };
    worker.send(Request::Create(add)).expect("send");
    let Response::Did { kind: Kind::Ports, message } = next(&mut ui).await else { panic!("attach") };
    assert!(message.starts_with("attached port"), "{message}");
    interfaces(&worker);
    let Response::Interfaces { interfaces: two, .. } = next(&mut ui).await else { panic!("interfaces") };
    assert_eq!(two.len(), 2, "{two:?}");
    let added = two.iter().find(|i| i.net_id == net2).expect("the new interface").clone();
    assert!(added.ips().starts_with("10.79.0."), "{added:?}");

    let remove =
        Create::RemovePort { server_id: sid.clone(), server_name: "ifvm".into(), port_id: added.port_id.clone() };
    worker.send(Request::Create(remove)).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Did { kind: Kind::Ports, .. }));
    // Detaching is asynchronous (hot unplug): the interface goes within a deadline.
    let mut left = 0;
    for _ in 0..120 {
        interfaces(&worker);
        let Response::Interfaces { interfaces: now, .. } = next(&mut ui).await else { panic!("interfaces") };
        left = now.len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(left, 1, "the port was detached");

    worker.send(Request::Diagnostics(sid.clone())).expect("send");
    let Response::Diagnostics { result, .. } = next(&mut ui).await else { panic!("diagnostics") };
    let d = result.expect("an admin reads diagnostics");
    assert_eq!(d["state"], "running", "{d}");
    assert_eq!(d["num_nics"], 1, "{d}");
}
