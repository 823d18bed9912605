//! Issue 17's first slice end to end: pause/unpause, suspend/resume, lock/unlock and server
//! tags through the real server and real agents on libvirt's `test:///default`, checking
//! the exact state walks, power states, instance actions, every refusal in Nova's words, and
//! the deadline of an action whose host never answers.

use meridian_common::{Client, ClientError};
use meridian_e2e::{Agent, Cloud, Server, prepare_cloud, wait_hosts_up, wait_server};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn member_of(server: &Server, admin: &Client, user: &str, project: &str) -> Client {
    let p = admin.post("identity", "/v3/projects", &json!({"project": {"name": project}})).await.expect("project");
    let pid = p["project"]["id"].as_str().expect("pid").to_string();
    let u =
        admin.post("identity", "/v3/users", &json!({"user": {"name": user, "password": "pw"}})).await.expect("user");
    let uid = u["user"]["id"].as_str().expect("uid").to_string();
    let roles = admin.get("identity", "/v3/roles?name=member").await.expect("roles");
    let rid = roles["roles"][0]["id"].as_str().expect("rid").to_string();
    admin.put("identity", &format!("/v3/projects/{pid}/users/{uid}/roles/{rid}"), &Value::Null).await.expect("grant");
    let mut c = Client::login(&server.creds(user, "pw", project)).await.expect("login");
    c.compute_version = Some("2.79".into());
    c
}

async fn cloud(server: &Server, hosts: usize) -> (Client, Cloud) {
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, hosts).await;
    (admin, cloud)
}

async fn boot(client: &Client, cloud: &Cloud, name: &str, extra: Value) -> String {
    let mut server = json!({"name": name, "imageRef": cloud.image_id, "flavorRef": "42",
                            "networks": [{"uuid": cloud.network_id}]});
    if let (Some(s), Some(e)) = (server.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let r = client.post("compute", "/servers", &json!({"server": server})).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    wait_server(client, &id, &["ACTIVE"], 60).await;
    id
}

async fn act(client: &Client, id: &str, body: Value) -> Result<Value, ClientError> {
    client.post("compute", &format!("/servers/{id}/action"), &body).await
}

/// The 409's message, or a panic naming what happened instead.
fn conflict(r: Result<Value, ClientError>) -> String {
    match r {
        Err(ClientError::Api { status, message, .. }) if status == StatusCode::CONFLICT => message,
        other => panic!("expected a 409, got {other:?}"),
    }
}

fn status_of(r: Result<Value, ClientError>) -> Option<StatusCode> {
    r.err().and_then(|e| e.status())
}

/// Waits until the server shows `status` with no task; its body.
async fn settled(client: &Client, id: &str, status: &str) -> Value {
    for _ in 0..600 {
        let s = client.get("compute", &format!("/servers/{id}")).await.expect("show");
        if s["server"]["status"] == status && s["server"]["OS-EXT-STS:task_state"].is_null() {
            return s["server"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{id} did not settle in {status}");
}

/// The (vm_state, task_state) pairs of the timeline from the `skip`th row, duplicates folded.
async fn walk(client: &Client, id: &str) -> Vec<(String, Option<String>)> {
    let t = client.get("compute", &format!("/servers/{id}/os-meridian-timeline")).await.expect("timeline");
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

#[tokio::test]
async fn pause_and_suspend_walk_novas_states() {
    let server = Server::start();
    let _agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let id = boot(&admin, &cloud, "walker", json!({})).await;
    let mut want = walk(&admin, &id).await;

    // Pause: active/pausing → paused, power state PAUSED (3).
    act(&admin, &id, json!({"pause": null})).await.expect("pause");
    let s = settled(&admin, &id, "PAUSED").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "paused");
    assert_eq!(s["OS-EXT-STS:power_state"], 3);
    want.extend(pairs(&[("active", Some("pausing")), ("paused", None)]));
    assert_eq!(walk(&admin, &id).await, want, "pause");

    // What a paused server refuses, in Nova's words.
    for (body, name) in [
        (json!({"pause": null}), "pause"),
        (json!({"suspend": null}), "suspend"),
        (json!({"resume": null}), "resume"),
        (json!({"os-start": null}), "start"),
        (json!({"os-stop": null}), "stop"),
        (json!({"reboot": {"type": "SOFT"}}), "reboot"),
    ] {
        let msg = conflict(act(&admin, &id, body).await);
        assert_eq!(msg, format!("Cannot '{name}' instance {id} while it is in vm_state paused"));
    }

    act(&admin, &id, json!({"unpause": null})).await.expect("unpause");
    let s = settled(&admin, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    want.extend(pairs(&[("paused", Some("unpausing")), ("active", None)]));
    assert_eq!(walk(&admin, &id).await, want, "unpause");
    assert_eq!(
        conflict(act(&admin, &id, json!({"unpause": null})).await),
        format!("Cannot 'unpause' instance {id} while it is in vm_state active")
    );
    assert_eq!(
        conflict(act(&admin, &id, json!({"resume": null})).await),
        format!("Cannot 'resume' instance {id} while it is in vm_state active")
    );

    // Suspend: a managed save; Nova's libvirt driver reports a saved guest as SHUTDOWN (4).
    act(&admin, &id, json!({"suspend": null})).await.expect("suspend");
    let s = settled(&admin, &id, "SUSPENDED").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "suspended");
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    want.extend(pairs(&[("active", Some("suspending")), ("suspended", None)]));
    assert_eq!(walk(&admin, &id).await, want, "suspend");
    for (body, name) in [
        (json!({"os-start": null}), "start"),
        (json!({"unpause": null}), "unpause"),
        (json!({"pause": null}), "pause"),
        (json!({"suspend": null}), "suspend"),
    ] {
        let msg = conflict(act(&admin, &id, body).await);
        assert_eq!(msg, format!("Cannot '{name}' instance {id} while it is in vm_state suspended"));
    }
    // The heartbeat's power sync leaves a suspended server suspended (its guest is "off").
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let s = settled(&admin, &id, "SUSPENDED").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);

    act(&admin, &id, json!({"resume": null})).await.expect("resume");
    let s = settled(&admin, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    want.extend(pairs(&[("suspended", Some("resuming")), ("active", None)]));
    assert_eq!(walk(&admin, &id).await, want, "resume");

    // The instance actions, newest first, each with its compute event finished.
    let actions = admin.get("compute", &format!("/servers/{id}/os-instance-actions")).await.expect("actions");
    let list = actions["instanceActions"].as_array().expect("list");
    let names: Vec<&str> = list.iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(names, ["resume", "suspend", "unpause", "pause", "create"]);
    let req = list[3]["request_id"].as_str().expect("request id");
    let pause = admin.get("compute", &format!("/servers/{id}/os-instance-actions/{req}")).await.expect("action");
    let event = &pause["instanceAction"]["events"][0];
    assert_eq!(event["event"], "compute_pause_instance", "{pause}");
    assert_eq!(event["result"], "Success", "{pause}");

    // A suspended server may be hard rebooted (Nova's ALLOW_HARD_REBOOT): it boots afresh.
    act(&admin, &id, json!({"suspend": null})).await.expect("suspend again");
    settled(&admin, &id, "SUSPENDED").await;
    act(&admin, &id, json!({"reboot": {"type": "HARD"}})).await.expect("hard reboot");
    let s = settled(&admin, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);

    // A paused server deletes (as Nova's delete allows from any state).
    act(&admin, &id, json!({"pause": null})).await.expect("pause again");
    settled(&admin, &id, "PAUSED").await;
    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete paused");
    wait_server(&admin, &id, &["DELETED"], 60).await;

    // And so does a suspended one.
    let id2 = boot(&admin, &cloud, "saved", json!({})).await;
    act(&admin, &id2, json!({"suspend": null})).await.expect("suspend");
    settled(&admin, &id2, "SUSPENDED").await;
    admin.delete("compute", &format!("/servers/{id2}")).await.expect("delete suspended");
    wait_server(&admin, &id2, &["DELETED"], 60).await;

    // Nova's schema takes any value for the action (tempest sends `{}`).
    let id3 = boot(&admin, &cloud, "schema", json!({})).await;
    act(&admin, &id3, json!({"pause": {}})).await.expect("pause with {}");
    settled(&admin, &id3, "PAUSED").await;
    assert_eq!(
        status_of(act(&admin, "00000000-0000-0000-0000-000000000000", json!({"unpause": {}})).await),
        Some(StatusCode::NOT_FOUND)
    );
}

#[tokio::test]
async fn a_locked_server_refuses_non_admins_until_unlocked() {
    let server = Server::start();
    let _agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let member = member_of(&server, &admin, "ann", "proj-a").await;
    let pid = member.session.project_id().expect("pid").to_string();
    let quota = json!({"quota_set": {"instances": 10, "cores": 20, "ram": 100_000}});
    admin.put("compute", &format!("/os-quota-sets/{pid}"), &quota).await.expect("quota");
    let id = boot(&member, &cloud, "locked", json!({})).await;

    // Before 2.73 a lock has no reason (a given one is ignored); the body shows `locked`
    // from 2.9 and `locked_reason` from 2.73.
    let mut m72 = member.clone();
    m72.compute_version = Some("2.72".into());
    let mut m73 = member.clone();
    m73.compute_version = Some("2.73".into());
    act(&m72, &id, json!({"lock": {"locked_reason": "maintenance"}})).await.expect("lock");
    let s = member.get("compute", &format!("/servers/{id}")).await.expect("show");
    assert_eq!(s["server"]["locked"], true);
    assert_eq!(s["server"]["locked_reason"], Value::Null, "2.79 shows the key, no reason was kept");
    act(&member, &id, json!({"unlock": null})).await.expect("unlock");

    act(&m73, &id, json!({"lock": {"locked_reason": "maintenance"}})).await.expect("lock 2.73");
    let s = m73.get("compute", &format!("/servers/{id}")).await.expect("show");
    assert_eq!(
        (s["server"]["locked"].clone(), s["server"]["locked_reason"].clone()),
        (json!(true), json!("maintenance"))
    );
    let s = m72.get("compute", &format!("/servers/{id}")).await.expect("show");
    assert_eq!(s["server"]["locked"], true);
    assert!(s["server"].get("locked_reason").is_none(), "no locked_reason before 2.73");
    let mut m8 = member.clone();
    m8.compute_version = Some("2.8".into());
    let s = m8.get("compute", &format!("/servers/{id}")).await.expect("show");
    assert!(s["server"].get("locked").is_none(), "no locked before 2.9");
    assert_eq!(status_of(act(&m73, &id, json!({"lock": {"locked_reason": ""}})).await), Some(StatusCode::BAD_REQUEST));

    // Every action and the delete are refused to the member; admins may act.
    let locked = format!("Instance {id} is locked");
    for body in [
        json!({"os-stop": null}),
        json!({"reboot": {"type": "HARD"}}),
        json!({"pause": null}),
        json!({"suspend": null}),
    ] {
        assert_eq!(conflict(act(&member, &id, body).await), locked);
    }
    assert_eq!(conflict(member.delete("compute", &format!("/servers/{id}")).await), locked);
    act(&admin, &id, json!({"pause": null})).await.expect("admin pauses a locked server");
    settled(&admin, &id, "PAUSED").await;
    // Nova checks the lock first: a locked paused server tells the member it is locked.
    assert_eq!(conflict(act(&member, &id, json!({"pause": null})).await), locked);
    act(&admin, &id, json!({"unpause": null})).await.expect("admin unpauses");
    settled(&admin, &id, "ACTIVE").await;

    // The `locked` list filter (2.73).
    let l = m73.get("compute", "/servers/detail?locked=true").await.expect("list");
    assert_eq!(l["servers"].as_array().map(Vec::len), Some(1));
    let l = m73.get("compute", "/servers/detail?locked=false").await.expect("list");
    assert_eq!(l["servers"], json!([]));
    assert_eq!(status_of(m73.get("compute", "/servers/detail?locked=maybe").await), Some(StatusCode::BAD_REQUEST));

    // The owner unlocks its own lock; an admin's lock is the admin's (403 for the owner).
    act(&member, &id, json!({"unlock": null})).await.expect("owner unlocks");
    act(&member, &id, json!({"os-stop": null})).await.expect("stop once unlocked");
    settled(&member, &id, "SHUTOFF").await;
    act(&admin, &id, json!({"lock": null})).await.expect("admin locks");
    assert_eq!(status_of(act(&member, &id, json!({"unlock": null})).await), Some(StatusCode::FORBIDDEN));
    act(&admin, &id, json!({"unlock": null})).await.expect("admin unlocks");
    act(&member, &id, json!({"os-start": null})).await.expect("start");
    settled(&member, &id, "ACTIVE").await;

    let actions = member.get("compute", &format!("/servers/{id}/os-instance-actions")).await.expect("actions");
    let names: Vec<&str> =
        actions["instanceActions"].as_array().expect("list").iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(
        names,
        ["start", "unlock", "lock", "stop", "unlock", "unpause", "pause", "lock", "unlock", "lock", "create"]
    );
    let req = actions["instanceActions"][2]["request_id"].as_str().expect("request id");
    let lock = member.get("compute", &format!("/servers/{id}/os-instance-actions/{req}")).await.expect("lock");
    assert_eq!(lock["instanceAction"]["events"][0]["event"], "api_lock", "{lock}");
    assert_eq!(lock["instanceAction"]["events"][0]["result"], "Success", "{lock}");
}

#[tokio::test]
async fn server_tags_follow_nova() {
    let server = Server::start();
    let _agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let a = boot(&admin, &cloud, "tag-a", json!({"tags": ["web", "prod"]})).await;
    let b = boot(&admin, &cloud, "tag-b", json!({})).await;
    let path = |id: &str, rest: &str| format!("/servers/{id}/tags{rest}");

    // Tags given at create (2.52+), in the body from 2.26, the routes from 2.26.
    let t = admin.get("compute", &path(&a, "")).await.expect("tags");
    assert_eq!(t, json!({"tags": ["web", "prod"]}));
    let s = admin.get("compute", &format!("/servers/{a}")).await.expect("show");
    assert_eq!(s["server"]["tags"], json!(["web", "prod"]));
    let mut old = admin.clone();
    old.compute_version = Some("2.25".into());
    assert_eq!(status_of(old.get("compute", &path(&a, "")).await), Some(StatusCode::NOT_FOUND));
    let s = old.get("compute", &format!("/servers/{a}")).await.expect("show");
    assert!(s["server"].get("tags").is_none());
    old.compute_version = Some("2.51".into());
    let body = json!({"server": {"name": "x", "imageRef": cloud.image_id, "flavorRef": "42",
                                 "networks": "none", "tags": ["a"]}});
    assert_eq!(status_of(old.post("compute", "/servers", &body).await), Some(StatusCode::BAD_REQUEST));

    // One tag: 201 with Location when new, 204 when already there; shown with 204 / 404.
    let put = |rest: String| {
        let admin = admin.clone();
        async move { admin.request(reqwest::Method::PUT, "compute", &rest).expect("request").send().await.expect("put tag") }
    };
    let r = put(path(&b, "/db")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = r.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default().to_string();
    assert!(loc.ends_with(&format!("/compute/v2.1/servers/{b}/tags/db")), "{loc}");
    assert_eq!(put(path(&b, "/db")).await.status(), StatusCode::NO_CONTENT);
    admin.get("compute", &path(&b, "/db")).await.expect("has db");
    match admin.get("compute", &path(&b, "/nope")).await {
        Err(ClientError::Api { status, message, .. }) => {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(message, format!("Server {b} has no tag 'nope'"));
        }
        other => panic!("{other:?}"),
    }
    // Invalid tags: a comma, a slash (encoded in the path), 61 characters.
    for bad in ["a,b", "a%2Fb", &"x".repeat(61)] {
        let r = put(path(&b, &format!("/{bad}"))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = r.json().await.expect("fault");
        let msg = body["badRequest"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with("Tag '") && msg.contains("is invalid"), "{msg}");
    }

    // Replace all (at most 50), delete one, delete all.
    let fifty: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    let r = admin.put("compute", &path(&b, ""), &json!({"tags": fifty})).await.expect("replace");
    assert_eq!(r["tags"].as_array().map(Vec::len), Some(50));
    let r = put(path(&b, "/one-more")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("fault");
    assert_eq!(body["badRequest"]["message"], "The number of tags exceeded the per-server limit 50");
    let fifty_one: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    assert_eq!(
        status_of(admin.put("compute", &path(&b, ""), &json!({"tags": fifty_one})).await),
        Some(StatusCode::BAD_REQUEST)
    );
    let r = admin.put("compute", &path(&b, ""), &json!({"tags": ["db", "prod"]})).await.expect("replace");
    assert_eq!(r, json!({"tags": ["db", "prod"]}));
    admin.delete("compute", &path(&b, "/db")).await.expect("delete tag");
    match admin.delete("compute", &path(&b, "/db")).await {
        Err(ClientError::Api { status, message, .. }) => {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(message, format!("Instance {b} has no tag 'db'"));
        }
        other => panic!("{other:?}"),
    }

    // List filters: a = [web, prod], b = [prod].
    let names = |q: &'static str| {
        let admin = admin.clone();
        async move {
            let l = admin.get("compute", &format!("/servers?{q}")).await.expect("list");
            let mut n: Vec<String> = l["servers"]
                .as_array()
                .expect("servers")
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("tags=prod").await, ["tag-a", "tag-b"]);
    assert_eq!(names("tags=web,prod").await, ["tag-a"]);
    assert_eq!(names("tags-any=web,nothing").await, ["tag-a"]);
    assert_eq!(names("not-tags=web,prod").await, ["tag-b"]);
    assert_eq!(names("not-tags-any=web").await, ["tag-b"]);
    assert_eq!(names("tags=prod&not-tags-any=web").await, ["tag-b"]);

    // Tags change in paused, suspended and stopped servers too; delete all is 204.
    act(&admin, &b, json!({"pause": null})).await.expect("pause");
    settled(&admin, &b, "PAUSED").await;
    assert_eq!(put(path(&b, "/paused")).await.status(), StatusCode::CREATED);
    admin.delete("compute", &path(&b, "")).await.expect("delete all");
    assert_eq!(admin.get("compute", &path(&b, "")).await.expect("tags"), json!({"tags": []}));
}

/// A host that takes a pause and never answers: at the deadline the task ends, the server
/// stays what it was, and the action says why (never stuck in a task state).
#[tokio::test]
async fn an_action_the_host_never_answers_ends_at_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("meridian.toml");
    std::fs::write(&config, "[compute]\naction_timeout_secs = 3\n").expect("config");
    let server = Server::start_opts(None, &["--config", config.to_str().expect("path")]);
    let mut agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let id = boot(&admin, &cloud, "deaf", json!({})).await;
    // The host still counts as up (its last heartbeat is recent), but nobody takes the work.
    agent.kill9();
    act(&admin, &id, json!({"pause": null})).await.expect("pause accepted");
    let s = admin.get("compute", &format!("/servers/{id}")).await.expect("show");
    assert_eq!(s["server"]["OS-EXT-STS:task_state"], "pausing");
    let s = settled(&admin, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "active");
    let actions = admin.get("compute", &format!("/servers/{id}/os-instance-actions")).await.expect("actions");
    let req = actions["instanceActions"][0]["request_id"].as_str().expect("request id");
    let pause = admin.get("compute", &format!("/servers/{id}/os-instance-actions/{req}")).await.expect("action");
    assert_eq!(pause["instanceAction"]["action"], "pause");
    assert_eq!(pause["instanceAction"]["message"], "Error", "{pause}");
    assert_eq!(pause["instanceAction"]["events"][0]["result"], "Error", "{pause}");
    let trace = pause["instanceAction"]["events"][0]["traceback"].as_str().unwrap_or_default();
    assert!(trace.contains("did not complete 'pause'"), "{pause}");
    let t = walk(&admin, &id).await;
    assert_eq!(t[t.len() - 2..], pairs(&[("active", Some("pausing")), ("active", None)]));
}

/// The same columns on PostgreSQL (migration 0022 there): lock with a reason, tags, a pause.
#[tokio::test]
async fn lock_tags_and_pause_on_postgresql() {
    let db = meridian_e2e::PgDatabase::create().await;
    let server = Server::start_with(Some(db.url.clone()));
    let _agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let id = boot(&admin, &cloud, "pg", json!({"tags": ["one"]})).await;
    act(&admin, &id, json!({"lock": {"locked_reason": "pg"}})).await.expect("lock");
    admin.put("compute", &format!("/servers/{id}/tags"), &json!({"tags": ["one", "two"]})).await.expect("tags");
    let s = admin.get("compute", &format!("/servers/{id}")).await.expect("show");
    assert_eq!(s["server"]["locked_reason"], "pg");
    assert_eq!(s["server"]["tags"], json!(["one", "two"]));
    let l = admin.get("compute", "/servers?tags=two&locked=true").await.expect("list");
    assert_eq!(l["servers"].as_array().map(Vec::len), Some(1), "{l}");
    act(&admin, &id, json!({"pause": null})).await.expect("pause");
    assert_eq!(settled(&admin, &id, "PAUSED").await["OS-EXT-STS:power_state"], 3);
}
