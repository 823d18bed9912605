//! The dashboard in a real terminal: the `meridian` binary inside tmux, against the real server
//! and an agent on libvirt's `test:///default`. Logs in from `OS_*` variables, launches an
//! instance through the wizard, watches BUILD → ACTIVE arrive without a key press, stops it,
//! deletes it. The screen is read with `tmux capture-pane`; every wait has a deadline that only
//! guards against hangs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meridian_e2e::tmux::Tmux;
use meridian_e2e::worker::{admin_profile, admin_worker, next};
use meridian_e2e::{ADMIN_PASSWORD, Agent, Server, binary, prepare_cloud, wait_hosts_up, wait_server, wait_volume};

/// The row of the instance on screen (the table line that holds its name).
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.strip_prefix('│').is_some_and(|r| r.starts_with(name)))
}

/// The wrapper script that runs `meridian` as admin from `OS_*` variables in `dir`; returns it
/// and the dashboard's log file.
fn write_script(dir: &Path, server: &Server, flags: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = dir.join("run.sh");
    let log = dir.join("meridian.log");
    // The wrapper keeps the pane open after an exit so a failure shows why.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport OS_AUTH_URL='{}' OS_USERNAME=admin OS_PASSWORD='{}' OS_PROJECT_NAME=admin \
             OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_IDENTITY_API_VERSION=3 \
             MERIDIAN_CONFIG_DIR='{d}/config' MERIDIAN_STATE_DIR='{d}/state' TERM=xterm-256color\n\
             unset OS_CLOUD\ncd '{d}'\n'{}' --log-file '{}' {}\necho \"meridian exited: $?\"\nsleep 600\n",
            server.auth_url(),
            ADMIN_PASSWORD,
            binary("meridian").display(),
            log.display(),
            flags.join(" "),
            d = dir.display(),
        ),
    )
    .expect("script");
    Command::new("chmod").arg("+x").arg(&script).status().expect("chmod");
    (script, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_watch_stop_and_delete_with_the_live_stream() {
    launch_watch_stop_and_delete(&[], "live").await;
}

/// What any other cloud gets: polling with `changes-since` and Horizon's backoff.
#[tokio::test(flavor = "multi_thread")]
async fn launch_watch_stop_and_delete_by_polling() {
    launch_watch_stop_and_delete(&["--poll"], "polling").await;
}

async fn launch_watch_stop_and_delete(flags: &[&str], mode: &str) {
    let server = Server::start();
    let agent = Agent::start(&server, "tui-host");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;

    let dir = tempfile::tempdir().expect("tmp");
    let (script, log) = write_script(dir.path(), &server, flags);
    let tmux = Tmux::start(&script, mode);
    let mut seen = Vec::new();
    let dump = |what: &str| {
        format!(
            "{what}\nmeridian log:\n{}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            agent.log_text()
        )
    };

    // Logged in from OS_* and the (empty) instance list is on screen.
    tmux.wait("the instance list", 30, &mut seen, |s| s.contains("Instances [0]") && s.contains("nothing here yet"));
    tmux.wait("the live mode", 30, &mut seen, |s| s.lines().last().is_some_and(|l| l.contains(mode)));

    // The wizard, step by step, waiting for each step's data.
    tmux.type_text("c");
    tmux.wait("the wizard", 10, &mut seen, |s| s.contains("Launch instances"));
    tmux.type_text("e2e-vm");
    tmux.keys(&["Enter"]);
    tmux.wait("the image list", 10, &mut seen, |s| s.contains("Search:") && s.contains("tiny"));
    tmux.type_text("tiny");
    tmux.keys(&["Enter"]);
    tmux.wait("the flavor list", 10, &mut seen, |s| s.contains("m1.tiny") && s.contains("vCPU"));
    tmux.keys(&["Enter"]);
    tmux.wait("the network list", 10, &mut seen, |s| s.contains("[x] net"));
    tmux.keys(&["Enter"]);
    // Nothing chosen: the project's default group, as the cloud lists it.
    tmux.wait("the security groups", 10, &mut seen, |s| s.contains("[x] default"));
    tmux.keys(&["Enter"]);
    tmux.wait("the key pair step", 10, &mut seen, |s| s.contains("(no key pair)"));
    tmux.keys(&["Enter"]);
    tmux.wait("the user data step", 10, &mut seen, |s| s.contains("user data"));
    tmux.keys(&["Tab"]);
    tmux.wait("the review", 10, &mut seen, |s| s.contains("Enter: launch") && s.contains("e2e-vm"));
    tmux.keys(&["Enter"]);

    // From here no key is pressed until the instance is ACTIVE.
    let first = seen.len();
    tmux.wait("the new instance", 20, &mut seen, |s| !s.contains("Launch instances") && row(s, "e2e-vm").is_some());
    tmux.wait(&dump("ACTIVE"), 90, &mut seen, |s| row(s, "e2e-vm").is_some_and(|r| r.contains("ACTIVE")));
    let building = seen[first..].iter().any(|s| row(s, "e2e-vm").is_some_and(|r| r.contains("BUILD")));
    assert!(building, "{}", dump("the instance was never seen in BUILD"));

    // Pause and suspend, each undone by its key again; the states arrive by themselves.
    for (key, state) in [("P", "PAUSED"), ("P", "ACTIVE"), ("Z", "SUSPENDED"), ("Z", "ACTIVE")] {
        tmux.type_text(key);
        tmux.wait(&dump(state), 60, &mut seen, |s| {
            row(s, "e2e-vm").is_some_and(|r| {
                r.contains(state) && !["pausing", "suspending", "resuming"].iter().any(|t| r.contains(t))
            })
        });
    }
    // Lock asks why; the cloud keeps the reason; L again unlocks.
    let id = admin.get("compute", "/servers?name=e2e-vm").await.expect("list")["servers"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut admin73 = admin.clone();
    admin73.compute_version = Some("2.73".into());
    tmux.type_text("L");
    tmux.wait("the lock prompt", 10, &mut seen, |s| s.contains("lock e2e-vm"));
    tmux.type_text("tmux test");
    tmux.keys(&["Enter"]);
    let mut locked = serde_json::Value::Null;
    for _ in 0..100 {
        locked = admin73.get("compute", &format!("/servers/{id}")).await.expect("show")["server"].clone();
        if locked["locked"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(locked["locked_reason"], "tmux test", "{locked}");
    // The detail shows the lock once the dashboard has it; L there unlocks.
    tmux.keys(&["Enter", "NPage"]);
    tmux.wait("the lock in the detail", 20, &mut seen, |s| s.contains("tmux test") && s.contains("locked_reason"));
    tmux.type_text("L");
    for _ in 0..100 {
        locked = admin73.get("compute", &format!("/servers/{id}")).await.expect("show")["server"].clone();
        if locked["locked"] == false {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(locked["locked"], false, "{locked}");
    tmux.keys(&["Escape"]);
    tmux.wait("the list again", 10, &mut seen, |s| s.contains("Instances [1]"));

    // Stop: the expected task shows, then SHUTOFF arrives by itself.
    tmux.type_text("S");
    tmux.wait(&dump("SHUTOFF"), 60, &mut seen, |s| row(s, "e2e-vm").is_some_and(|r| r.contains("SHUTOFF")));

    // Delete, confirmed; the row goes away by itself.
    tmux.keys(&["C-d"]);
    tmux.wait("the confirmation", 10, &mut seen, |s| s.contains("Delete instance e2e-vm?"));
    tmux.type_text("y");
    tmux.wait(&dump("the row to go"), 60, &mut seen, |s| row(s, "e2e-vm").is_none() && s.contains("Instances [0]"));

    // And the cloud agrees.
    let left = admin.get("compute", "/servers/detail").await.expect("list");
    assert_eq!(left["servers"].as_array().map(Vec::len), Some(0), "{left}");
    tmux.type_text("q");
    tmux.wait("meridian to exit", 10, &mut seen, |s| s.contains("meridian exited: 0"));
}

/// The polling path, as on any cloud without our stream: a server created from the `openstack`
/// CLI appears on screen within 5 s, and its ACTIVE shows within 5 s of the API reporting it,
/// without a key press (the 5 s are the feature's promise; the other waits only guard hangs).
#[tokio::test(flavor = "multi_thread")]
async fn a_server_created_from_the_cli_appears_and_goes_active_by_polling() {
    let server = Server::start();
    let agent = Agent::start(&server, "poll-host");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (script, log) = write_script(dir.path(), &server, &["--poll"]);
    let tmux = Tmux::start(&script, "cli-poll");
    let mut seen = Vec::new();
    tmux.wait("the instance list", 30, &mut seen, |s| s.contains("Instances [0]") && s.contains("nothing here yet"));
    tmux.wait("polling", 30, &mut seen, |s| s.lines().last().is_some_and(|l| l.contains("polling")));

    let created = server.admin_cli().json(&[
        "server",
        "create",
        "--image",
        &cloud.image_id,
        "--flavor",
        "m1.tiny",
        "--network",
        &cloud.network_id,
        "cli-vm",
    ]);
    let id = created["id"].as_str().expect("id").to_string();
    let dump = |what: &str| {
        format!(
            "{what}\nmeridian log:\n{}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            agent.log_text()
        )
    };
    tmux.wait(&dump("the CLI's server on screen within 5 s"), 5, &mut seen, |s| row(s, "cli-vm").is_some());
    meridian_e2e::wait_server(&admin, &id, &["ACTIVE"], 90).await;
    tmux.wait(&dump("ACTIVE on screen within 5 s"), 5, &mut seen, |s| {
        row(s, "cli-vm").is_some_and(|r| r.contains("ACTIVE"))
    });
    server.admin_cli().run(&["server", "delete", "--wait", &id]);
    tmux.wait(&dump("the deleted server gone within 5 s"), 5, &mut seen, |s| row(s, "cli-vm").is_none());
    tmux.type_text("q");
    tmux.wait("meridian to exit", 10, &mut seen, |s| s.contains("meridian exited: 0"));
}

/// Bulk actions: three instances marked with Space, one `S`, one confirmation naming the count,
/// and all three reach SHUTOFF on screen (real server and agent, libvirt's test driver).
#[tokio::test(flavor = "multi_thread")]
async fn bulk_stop_three_instances() {
    let server = Server::start();
    let agent = Agent::start(&server, "bulk-host");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let flavors = admin.get("compute", "/flavors?minRam=0").await.expect("flavors");
    let flavor = flavors["flavors"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "m1.tiny"))
        .and_then(|f| f["id"].as_str())
        .expect("m1.tiny")
        .to_string();
    admin
        .post(
            "compute",
            "/servers",
            &serde_json::json!({"server": {"name": "bulk", "imageRef": cloud.image_id, "flavorRef": flavor,
                "min_count": 3, "max_count": 3, "networks": [{"uuid": cloud.network_id}]}}),
        )
        .await
        .expect("create three");
    let listed = admin.get("compute", "/servers?name=bulk").await.expect("list");
    let ids: Vec<String> = listed["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 3, "{listed}");
    for id in &ids {
        meridian_e2e::wait_server(&admin, id, &["ACTIVE"], 90).await;
    }

    let dir = tempfile::tempdir().expect("tmp");
    let (script, log) = write_script(dir.path(), &server, &[]);
    let tmux = Tmux::start(&script, "bulk");
    let mut seen = Vec::new();
    let dump = |what: &str| {
        format!(
            "{what}\nmeridian log:\n{}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            agent.log_text()
        )
    };
    let names = ["bulk-1", "bulk-2", "bulk-3"];
    let all = |s: &str, state: &str| names.iter().all(|n| row(s, n).is_some_and(|r| r.contains(state)));
    tmux.wait("three ACTIVE rows", 30, &mut seen, |s| s.contains("Instances [3]") && all(s, "ACTIVE"));
    // The selection follows its row: if bulk-1 was listed first it is still selected, at the
    // bottom. Go to the top, then each Space marks a row and steps down.
    tmux.keys(&["g"]);
    tmux.type_text("   ");
    tmux.wait("three marked", 10, &mut seen, |s| s.contains("3 marked"));
    tmux.type_text("S");
    tmux.wait("one confirmation naming the count", 10, &mut seen, |s| s.contains("Stop 3 instances?"));
    tmux.type_text("y");
    tmux.wait(&dump("all three SHUTOFF"), 60, &mut seen, |s| all(s, "SHUTOFF"));
    for id in &ids {
        let v = admin.get("compute", &format!("/servers/{id}")).await.expect("show");
        assert_eq!(v["server"]["status"], "SHUTOFF", "{v}");
    }
    // The first row's action history: Nova's instance actions with their events in words.
    tmux.keys(&["Escape", "g", "Enter"]);
    tmux.wait("the detail", 10, &mut seen, |s| s.contains("Fields") && s.contains("Actions"));
    tmux.keys(&["Tab", "Tab", "Tab"]);
    tmux.wait(&dump("the action history"), 10, &mut seen, |s| {
        s.contains("create") && s.contains("stop") && s.contains("build and run") && s.contains("power off")
    });
    tmux.keys(&["Escape"]);
    tmux.type_text("q");
    tmux.wait("meridian to exit", 10, &mut seen, |s| s.contains("meridian exited: 0"));
}

/// Ctrl-d in the key pairs view: asks, deletes, and the cloud agrees.
#[tokio::test(flavor = "multi_thread")]
async fn delete_a_key_pair_from_its_view() {
    let server = Server::start();
    let admin = server.admin().await;
    admin.post("compute", "/os-keypairs", &serde_json::json!({"keypair": {"name": "e2e-key"}})).await.expect("keypair");
    let dir = tempfile::tempdir().expect("tmp");
    let (script, _log) = write_script(dir.path(), &server, &["--poll"]);
    let tmux = Tmux::start(&script, "keypairs");
    let mut seen = Vec::new();
    tmux.wait("the instance list", 30, &mut seen, |s| s.contains("Instances [0]"));
    tmux.type_text(":keypairs");
    tmux.keys(&["Enter"]);
    tmux.wait("the key pair", 10, &mut seen, |s| row(s, "e2e-key").is_some());
    tmux.keys(&["C-d"]);
    tmux.wait("the confirmation", 10, &mut seen, |s| s.contains("Delete key pair e2e-key?"));
    tmux.type_text("y");
    tmux.wait("the row to go", 20, &mut seen, |s| {
        row(s, "e2e-key").is_none() && s.contains("deleted key pair e2e-key")
    });
    let left = admin.get("compute", "/os-keypairs").await.expect("list");
    assert_eq!(left["keypairs"].as_array().map(Vec::len), Some(0), "{left}");
    tmux.type_text("q");
    tmux.wait("meridian to exit", 10, &mut seen, |s| s.contains("meridian exited: 0"));
}

/// In a real terminal: `c` in the Images view uploads a local file (the transfers overlay shows
/// it end), the new image is listed, and `D` downloads it back to a file with the same bytes.
#[tokio::test(flavor = "multi_thread")]
async fn upload_and_download_an_image_from_its_view() {
    let server = Server::start();
    let admin = server.admin().await;
    let dir = tempfile::tempdir().expect("tmp");
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let src = dir.path().join("tmux-upload.raw");
    std::fs::write(&src, &data).expect("write");
    let (script, log) = write_script(dir.path(), &server, &["--poll"]);
    let tmux = Tmux::start(&script, "images");
    let mut seen = Vec::new();
    let dump = |what: &str| format!("{what}\nmeridian log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    tmux.wait("the instance list", 30, &mut seen, |s| s.contains("Instances [0]"));
    tmux.type_text(":images");
    tmux.keys(&["Enter"]);
    tmux.wait("the images view", 10, &mut seen, |s| s.contains("Images [0]"));
    tmux.type_text("c");
    tmux.wait("the upload form", 10, &mut seen, |s| s.contains("Upload image"));
    tmux.type_text(&src.display().to_string());
    // File, name, format, visibility, min disk: defaults; Enter on the last field uploads.
    tmux.keys(&["Enter", "Enter", "Enter", "Enter", "Enter", "Enter"]);
    tmux.wait(&dump("the upload to end"), 60, &mut seen, |s| {
        s.contains("Transfers") && s.contains("uploaded image tmux-upload")
    });
    tmux.keys(&["Escape"]);
    tmux.wait(&dump("the new image"), 30, &mut seen, |s| {
        row(s, "tmux-upload").is_some_and(|r| r.contains("active") && r.contains("raw"))
    });
    let out = dir.path().join("back.raw");
    tmux.type_text("D");
    tmux.wait("the download form", 10, &mut seen, |s| s.contains("Download image"));
    // Replace the suggested file with ours.
    tmux.keys(&["C-u"]);
    for _ in 0..80 {
        tmux.keys(&["BSpace"]);
    }
    tmux.type_text(&out.display().to_string());
    tmux.keys(&["Enter"]);
    tmux.wait(&dump("the download to end"), 60, &mut seen, |s| {
        s.contains("↓ tmux-upload") && s.contains("downloaded image tmux-upload")
    });
    assert!(std::fs::read(&out).expect("downloaded") == data, "the downloaded bytes differ");
    let images = admin.get("image", "/v2/images?name=tmux-upload").await.expect("list");
    assert_eq!(images["images"][0]["size"].as_u64(), Some(data.len() as u64), "{images}");
    tmux.keys(&["Escape"]);
    tmux.type_text("q");
    tmux.wait("meridian to exit", 10, &mut seen, |s| s.contains("meridian exited: 0"));
}

/// The dashboard's worker against a server whose tokens live two seconds: an expired token is
/// replaced by a fresh login and the request goes through; when the password changed meanwhile,
/// the UI is asked to log in and the waiting request is sent after it.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_logs_in_again_on_401_and_asks_when_it_cannot() {
    use meridian_tui::config::Profile;
    use meridian_tui::worker::{Kind, Listing, ProfileBox, Request, Response};

    let server = Server::start_opts(None, &["--token-lifetime", "2"]);
    let admin = server.admin().await;
    let pid = admin.session.project_id().expect("project").to_string();
    let user = admin
        .post(
            "identity",
            "/v3/users",
            &serde_json::json!({"user": {"name": "carol", "password": "first", "default_project_id": pid}}),
        )
        .await
        .expect("user");
    let uid = user["user"]["id"].as_str().expect("id").to_string();
    let roles = admin.get("identity", "/v3/roles?name=member").await.expect("roles");
    let rid = roles["roles"][0]["id"].as_str().expect("member role").to_string();
    admin
        .put("identity", &format!("/v3/projects/{pid}/users/{uid}/roles/{rid}"), &serde_json::Value::Null)
        .await
        .expect("grant");

    let (ui_tx, mut ui) = tokio::sync::mpsc::unbounded_channel();
    let worker = meridian_tui::worker::spawn(ui_tx, false);
    let profile = |password: &str| Profile {
        name: "test".into(),
        auth_url: server.auth_url(),
        username: "carol".into(),
        password: Some(password.into()),
        project_name: "admin".into(),
        user_domain: "Default".into(),
        project_domain: "Default".into(),
        region: None,
        ..Profile::default()
    };
    // Waits for the next response that is not live-tracking chatter.
    async fn next(ui: &mut tokio::sync::mpsc::UnboundedReceiver<Response>) -> Response {
        loop {
            let r = tokio::time::timeout(Duration::from_secs(30), ui.recv()).await.expect("a response").expect("open");
            if !matches!(r, Response::LiveMode(_) | Response::ServerUpdate(_)) {
                return r;
            }
        }
    }
    worker.send(Request::Login(Box::new(ProfileBox(profile("first"))))).expect("send");
    assert!(matches!(next(&mut ui).await, Response::LoggedIn(_)));

    // The token expires; the worker logs in again by itself and the list arrives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    worker.send(Request::List(Kind::Flavors)).expect("send");
    match next(&mut ui).await {
        Response::Listed(Listing::Flavors(f)) => assert!(!f.is_empty()),
        other => panic!("expected flavors, got {other:?}"),
    }

    // The password changes: the next 401 cannot be fixed alone, so the UI is asked.
    let admin = server.admin().await; // (its own token has expired too)
    admin
        .send(
            reqwest::Method::PATCH,
            "identity",
            &format!("/v3/users/{uid}"),
            Some(&serde_json::json!({"user": {"password": "second"}})),
        )
        .await
        .expect("password change");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    worker.send(Request::List(Kind::Flavors)).expect("send");
    loop {
        match next(&mut ui).await {
            Response::NeedLogin { message } => {
                assert!(message.contains("did not accept"), "{message}");
                break;
            }
            // A renewal attempt may report first.
            Response::LoggedIn(_) => continue,
            other => panic!("expected a login request, got {other:?}"),
        }
    }
    worker.send(Request::Login(Box::new(ProfileBox(profile("second"))))).expect("send");
    assert!(matches!(next(&mut ui).await, Response::LoggedIn(_)));
    // The request that met the 401 was kept and goes through now.
    match next(&mut ui).await {
        Response::Listed(Listing::Flavors(f)) => assert!(!f.is_empty()),
        other => panic!("expected the waiting flavors, got {other:?}"),
    }
}

/// The all-projects toggle against the real server: without it an admin's networks and ports
/// are the project's own (and shared ones); with it another project's show too, servers are
/// listed with `all_tenants=1`, and Keystone gives the project names.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_lists_every_project_for_an_admin_when_asked() {
    use meridian_tui::table::Resource;
    use meridian_tui::worker::{Kind, Listing, Request, Response};

    let server = Server::start();
    let admin = server.admin().await;
    let other = admin
        .post(
            "identity",
            "/v3/projects",
            &serde_json::json!({"project": {"name": "elsewhere", "domain_id": "default"}}),
        )
        .await
        .expect("project");
    let other_id = other["project"]["id"].as_str().expect("id").to_string();
    let net = admin
        .post(
            "network",
            "/v2.0/networks",
            &serde_json::json!({"network": {"name": "their-net", "project_id": other_id}}),
        )
        .await
        .expect("network");
    let net_id = net["network"]["id"].as_str().expect("id").to_string();
    admin
        .post(
            "network",
            "/v2.0/subnets",
            &serde_json::json!({"subnet": {"network_id": net_id, "cidr": "10.91.0.0/24", "ip_version": 4,
                "project_id": other_id}}),
        )
        .await
        .expect("subnet");
    admin
        .post(
            "network",
            "/v2.0/ports",
            &serde_json::json!({"port": {"name": "their-port", "network_id": net_id, "project_id": other_id}}),
        )
        .await
        .expect("port");

    let (worker, mut ui) = admin_worker(&server).await;
    let list = |kind| {
        worker.send(Request::List(kind)).expect("send");
    };
    list(Kind::Networks);
    match next(&mut ui).await {
        Response::Listed(Listing::Networks(n)) => assert!(!n.iter().any(|n| n.name == "their-net"), "{n:?}"),
        other => panic!("expected networks, got {other:?}"),
    }
    list(Kind::Ports);
    match next(&mut ui).await {
        Response::Listed(Listing::Ports(p)) => assert!(!p.iter().any(|p| p.name() == "their-port")),
        other => panic!("expected ports, got {other:?}"),
    }
    list(Kind::Subnets);
    match next(&mut ui).await {
        Response::Listed(Listing::Subnets(v)) => assert!(!v.iter().any(|s| s.cidr == "10.91.0.0/24"), "{v:?}"),
        other => panic!("expected subnets, got {other:?}"),
    }

    worker.send(Request::AllProjects(true)).expect("send");
    list(Kind::Networks);
    match next(&mut ui).await {
        Response::Listed(Listing::Networks(n)) => assert!(n.iter().any(|n| n.name == "their-net"), "{n:?}"),
        other => panic!("expected networks, got {other:?}"),
    }
    list(Kind::Ports);
    match next(&mut ui).await {
        Response::Listed(Listing::Ports(p)) => {
            let theirs = p.iter().find(|p| p.name() == "their-port").expect("their port");
            assert_eq!(theirs.network_name, "their-net");
        }
        other => panic!("expected ports, got {other:?}"),
    }
    list(Kind::Subnets);
    match next(&mut ui).await {
        Response::Listed(Listing::Subnets(v)) => {
            let theirs = v.iter().find(|s| s.cidr == "10.91.0.0/24").expect("their subnet");
            assert_eq!(theirs.network_name, "their-net");
        }
        other => panic!("expected subnets, got {other:?}"),
    }
    list(Kind::Servers);
    assert!(matches!(next(&mut ui).await, Response::Listed(Listing::Servers(_))), "all_tenants=1 is accepted");
    worker.send(Request::ProjectNames).expect("send");
    match next(&mut ui).await {
        Response::ProjectNames(names) => assert_eq!(names.get(&other_id).map(String::as_str), Some("elsewhere")),
        other => panic!("expected project names, got {other:?}"),
    }
}

/// The create forms' requests against the real server: a network with its subnet (gateway off,
/// DHCP, DNS) and a port with a chosen address; a refused subnet leaves no network behind.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_creates_networks_with_subnets_and_ports() {
    use meridian_tui::overlays::Create;
    use meridian_tui::overlays::create::{NetworkSpec, PortSpec, SubnetSpec};
    use meridian_tui::worker::{Kind, Request, Response};

    let server = Server::start();
    let admin = server.admin().await;
    let (worker, mut ui) = admin_worker(&server).await;

    let subnet = |cidr: &str, gateway: Option<Option<String>>| SubnetSpec {
        cidr: cidr.into(),
        ip_version: 4,
        gateway,
        dhcp: false,
        dns: vec!["192.0.2.53".into()],
    };
    let spec = NetworkSpec { name: "formnet".into(), subnet: Some(subnet("10.93.0.0/24", Some(None))) };
    worker.send(Request::Create(Create::Network(spec))).expect("send");
    match next(&mut ui).await {
        Response::Created { kind: Kind::Networks, name } => assert_eq!(name, "formnet"),
        other => panic!("expected the network, got {other:?}"),
    }
    let subnets = admin.get("network", "/v2.0/subnets?cidr=10.93.0.0/24").await.expect("subnets");
    let sn = &subnets["subnets"][0];
    assert_eq!(sn["gateway_ip"], serde_json::Value::Null, "{sn}");
    assert_eq!(sn["enable_dhcp"], false, "{sn}");
    assert_eq!(sn["dns_nameservers"], serde_json::json!(["192.0.2.53"]), "{sn}");
    let net_id = sn["network_id"].as_str().expect("network").to_string();

    let port = PortSpec { network_id: net_id.clone(), name: "vip".into(), fixed_ip: Some("10.93.0.50".into()) };
    worker.send(Request::Create(Create::Port(port))).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Created { kind: Kind::Ports, .. }));
    let ports = admin.get("network", &format!("/v2.0/ports?network_id={net_id}")).await.expect("ports");
    let vip = ports["ports"].as_array().and_then(|a| a.iter().find(|p| p["name"] == "vip")).expect("vip").clone();
    assert_eq!(vip["fixed_ips"][0]["ip_address"], "10.93.0.50", "{vip}");

    // A gateway outside the CIDR: Neutron refuses the subnet, and the network goes too.
    let bad =
        NetworkSpec { name: "halfnet".into(), subnet: Some(subnet("10.94.0.0/24", Some(Some("10.95.0.1".into())))) };
    worker.send(Request::Create(Create::Network(bad))).expect("send");
    match next(&mut ui).await {
        Response::Failed { message, .. } => assert!(message.starts_with("creating network halfnet"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let nets = admin.get("network", "/v2.0/networks?name=halfnet").await.expect("networks");
    assert_eq!(nets["networks"].as_array().map(Vec::len), Some(0), "{nets}");
}

/// Identity administration through the worker against the real Keystone API: users and role
/// assignments are listed, a user is disabled and enabled, a grant is revoked, a project deleted.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_administers_identity() {
    use meridian_tui::worker::{Kind, Listing, Request, Response};

    let server = Server::start();
    let admin = server.admin().await;
    let project = admin
        .post("identity", "/v3/projects", &serde_json::json!({"project": {"name": "idp", "domain_id": "default"}}))
        .await
        .expect("project");
    let pid = project["project"]["id"].as_str().expect("id").to_string();
    let user = admin
        .post("identity", "/v3/users", &serde_json::json!({"user": {"name": "dora", "password": "pw-dora-1"}}))
        .await
        .expect("user");
    let uid = user["user"]["id"].as_str().expect("id").to_string();
    let roles = admin.get("identity", "/v3/roles?name=member").await.expect("roles");
    let rid = roles["roles"][0]["id"].as_str().expect("member").to_string();
    admin
        .put("identity", &format!("/v3/projects/{pid}/users/{uid}/roles/{rid}"), &serde_json::Value::Null)
        .await
        .expect("grant");

    let (worker, mut ui) = admin_worker(&server).await;

    worker.send(Request::List(Kind::Users)).expect("send");
    match next(&mut ui).await {
        Response::Listed(Listing::Users(u)) => assert!(u.iter().any(|u| u.name == "dora")),
        other => panic!("expected users, got {other:?}"),
    }
    worker
        .send(Request::SetEnabled { kind: Kind::Users, id: uid.clone(), name: "dora".into(), enabled: false })
        .expect("send");
    assert!(matches!(next(&mut ui).await, Response::EnabledSet { enabled: false, .. }));
    let u = admin.get("identity", &format!("/v3/users/{uid}")).await.expect("user");
    assert_eq!(u["user"]["enabled"], false, "{u}");

    worker.send(Request::List(Kind::Assignments)).expect("send");
    let grant = match next(&mut ui).await {
        Response::Listed(Listing::Assignments(a)) => a.into_iter().find(|a| a.actor == "dora").expect("dora's grant"),
        other => panic!("expected assignments, got {other:?}"),
    };
    assert_eq!((grant.role.as_str(), grant.scope.as_str()), ("member", "project idp"));
    worker
        .send(Request::Delete { kind: Kind::Assignments, id: grant.id.clone(), name: grant.role.clone() })
        .expect("send");
    assert!(matches!(next(&mut ui).await, Response::Deleted { .. }));
    let left = admin.get("identity", &format!("/v3/role_assignments?user.id={uid}")).await.expect("assignments");
    assert_eq!(left["role_assignments"].as_array().map(Vec::len), Some(0), "{left}");

    // The forms' requests: a user with a role on a project, then a grant by names.
    use meridian_tui::overlays::Create;
    let user = Create::User {
        name: "eve".into(),
        password: "pw-eve-12".into(),
        project: Some("idp".into()),
        role: "member".into(),
    };
    worker.send(Request::Create(user)).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Created { kind: Kind::Users, .. }));
    let eve = admin.get("identity", "/v3/users?name=eve").await.expect("eve");
    let eve_id = eve["users"][0]["id"].as_str().expect("eve's id").to_string();
    let has = admin.get("identity", &format!("/v3/role_assignments?user.id={eve_id}")).await.expect("assignments");
    assert_eq!(has["role_assignments"][0]["scope"]["project"]["id"], pid.as_str(), "{has}");
    worker
        .send(Request::Create(Create::Grant { user: "dora".into(), project: "idp".into(), role: "reader".into() }))
        .expect("send");
    assert!(matches!(next(&mut ui).await, Response::Created { kind: Kind::Assignments, .. }));
    let has = admin.get("identity", &format!("/v3/role_assignments?user.id={uid}")).await.expect("assignments");
    assert_eq!(has["role_assignments"].as_array().map(Vec::len), Some(1), "{has}");
    worker
        .send(Request::Create(Create::Grant { user: "nobody".into(), project: "idp".into(), role: "reader".into() }))
        .expect("send");
    match next(&mut ui).await {
        Response::Failed { message, .. } => assert!(message.contains("no user nobody"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    worker.send(Request::Delete { kind: Kind::IdProjects, id: pid.clone(), name: "idp".into() }).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Deleted { .. }));
    assert!(admin.get("identity", &format!("/v3/projects/{pid}")).await.is_err(), "the project is gone");
}

/// The dashboard's live tracking across a server restart: the `reconnect` event that ends the
/// stream at SIGTERM is a planned reconnect (status "reconnecting (server restarting)"), not a
/// broken stream, and the stream is live again once the server is back.
#[tokio::test(flavor = "multi_thread")]
async fn live_tracking_reconnects_after_a_server_restart() {
    use meridian_tui::worker::{ProfileBox, Request, Response};

    let mut server = Server::start();
    let (ui_tx, mut ui) = tokio::sync::mpsc::unbounded_channel();
    let worker = meridian_tui::worker::spawn(ui_tx, true);
    worker.send(Request::Login(Box::new(ProfileBox(admin_profile(&server))))).expect("send");
    // The live-tracking status lines, in order, until `want` shows.
    async fn mode(ui: &mut tokio::sync::mpsc::UnboundedReceiver<Response>, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let r = tokio::time::timeout(Duration::from_secs(30), ui.recv())
                .await
                .unwrap_or_else(|_| panic!("no {want:?} in time; saw {seen:?}"))
                .expect("open");
            if let Response::LiveMode(m) = r {
                seen.push(m.clone());
                if m == want {
                    return seen;
                }
            }
        }
    }
    mode(&mut ui, "live").await;

    let stopped = tokio::task::spawn_blocking(move || {
        let clean = server.terminate();
        (server, clean)
    });
    let seen = mode(&mut ui, "reconnecting (server restarting)").await;
    assert_eq!(seen, ["reconnecting (server restarting)"], "the stream's end is announced, not found broken");
    let (mut server, clean) = stopped.await.expect("terminate");
    assert!(clean, "{}", server.log_text());
    server.restart();
    mode(&mut ui, "live").await;
}

/// `w`: the worker asks the real server for a noVNC URL of an ACTIVE instance (the same
/// request the dashboard sends), the page behind it is served, and a stopped instance gets a
/// sentence rather than a URL.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_gets_a_graphical_console_url() {
    use meridian_tui::worker::{Request, Response};

    let server = Server::start();
    let _agent = Agent::start(&server, "vnc-host");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let flavors = admin.get("compute", "/flavors?minRam=0").await.expect("flavors");
    let flavor = flavors["flavors"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "m1.tiny"))
        .and_then(|f| f["id"].as_str())
        .expect("m1.tiny")
        .to_string();
    let created = admin
        .post(
            "compute",
            "/servers",
            &serde_json::json!({"server": {"name": "vnc1", "imageRef": cloud.image_id, "flavorRef": flavor,
                "networks": [{"uuid": cloud.network_id}]}}),
        )
        .await
        .expect("create");
    let id = created["server"]["id"].as_str().expect("id").to_string();
    meridian_e2e::wait_server(&admin, &id, &["ACTIVE"], 90).await;

    let (worker, mut ui) = admin_worker(&server).await;
    async fn web_console(ui: &mut tokio::sync::mpsc::UnboundedReceiver<Response>) -> Result<String, String> {
        loop {
            let r = tokio::time::timeout(Duration::from_secs(30), ui.recv()).await.expect("a response").expect("open");
            match r {
                Response::WebConsoleUrl { name, result } => {
                    assert_eq!(name, "vnc1");
                    return result;
                }
                Response::Failed { message, .. } => panic!("failed: {message}"),
                _ => {}
            }
        }
    }
    worker.send(Request::WebConsole { id: id.clone(), name: "vnc1".into() }).expect("send");
    let url = web_console(&mut ui).await.expect("a URL");
    assert!(url.contains("/console/novnc/") && url.contains("token"), "{url}");
    let page = reqwest::get(&url).await.expect("page");
    assert!(page.status().is_success(), "{}", page.status());
    assert!(page.text().await.expect("html").contains("noVNC"), "the noVNC page");

    admin.post("compute", &format!("/servers/{id}/action"), &serde_json::json!({"os-stop": null})).await.expect("stop");
    meridian_e2e::wait_server(&admin, &id, &["SHUTOFF"], 90).await;
    worker.send(Request::WebConsole { id: id.clone(), name: "vnc1".into() }).expect("send");
    let refused = web_console(&mut ui).await.expect_err("stopped");
    assert_eq!(refused, "vnc1 is not running; start it for a graphical console");
}

/// Waits for transfer `id` to end; returns its last progress and every `done` figure on the way.
async fn transfer_end(
    ui: &mut tokio::sync::mpsc::UnboundedReceiver<meridian_tui::worker::Response>,
    id: u64,
    cancel_when_moving: Option<&tokio::sync::mpsc::UnboundedSender<meridian_tui::worker::Request>>,
) -> (meridian_tui::transfer::Progress, Vec<u64>) {
    use meridian_tui::transfer::Phase;
    use meridian_tui::worker::{Request, Response};
    let mut seen = Vec::new();
    let mut cancelled = false;
    loop {
        let r = tokio::time::timeout(Duration::from_secs(120), ui.recv()).await.expect("progress").expect("open");
        let Response::Transfer(p) = r else { continue };
        if p.id != id {
            continue;
        }
        seen.push(p.done);
        if let Some(w) = cancel_when_moving
            && !cancelled
            && p.phase == Phase::Moving
            && p.done > 0
        {
            w.send(Request::CancelTransfer(id)).expect("send");
            cancelled = true;
        }
        if p.phase.finished() {
            return (p, seen);
        }
    }
}

/// The Images view's upload and download, through the dashboard's worker against the real
/// server: a local file becomes an active image with the file's checksum (format read from the
/// file, name from the file name), its data comes back byte for byte to a new file, an existing
/// file is never overwritten, and a cancelled upload leaves no image behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_upload_and_download_stream_verify_and_cancel() {
    use md5::{Digest, Md5};
    use meridian_tui::transfer::{DownloadSpec, Phase, UploadSpec};
    use meridian_tui::worker::Request;

    let server = Server::start();
    let admin = server.admin().await;
    let (worker, mut ui) = admin_worker(&server).await;
    let dir = tempfile::tempdir().expect("tmp");

    // 24 MiB that do not repeat, starting with qcow2's magic so the format is detected.
    let mut data = b"QFI\xfb".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 24 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let src = dir.path().join("transfer-src.qcow2");
    std::fs::write(&src, &data).expect("write");
    let spec = UploadSpec {
        file: src.display().to_string(),
        name: String::new(),
        disk_format: String::new(),
        visibility: "private".into(),
        min_disk_gb: 1,
        min_ram_mb: 64,
    };
    worker.send(Request::Upload { id: 1, spec: spec.clone() }).expect("send");
    let (up, seen) = transfer_end(&mut ui, 1, None).await;
    assert_eq!(up.phase, Phase::Done, "{up:?}");
    assert_eq!((up.done, up.total), (data.len() as u64, Some(data.len() as u64)));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen:?}");
    let image_id = up.image_id.clone().expect("image id");
    let img = admin.get("image", &format!("/v2/images/{image_id}")).await.expect("image");
    assert_eq!(img["name"], "transfer-src");
    assert_eq!((img["status"].as_str(), img["disk_format"].as_str()), (Some("active"), Some("qcow2")));
    assert_eq!((img["min_disk"].as_u64(), img["min_ram"].as_u64()), (Some(1), Some(64)));
    let md5 = hex::encode(Md5::digest(&data));
    assert_eq!(img["checksum"].as_str(), Some(md5.as_str()));

    // Download to a new file: the same bytes, no part file left.
    let out = dir.path().join("copy.qcow2");
    let down =
        DownloadSpec { image_id: image_id.clone(), name: "transfer-src".into(), file: out.display().to_string() };
    worker.send(Request::Download { id: 2, spec: down.clone() }).expect("send");
    let (got, _) = transfer_end(&mut ui, 2, None).await;
    assert_eq!(got.phase, Phase::Done, "{got:?}");
    assert!(std::fs::read(&out).expect("downloaded") == data, "the downloaded bytes differ");
    assert!(!dir.path().join("copy.qcow2.part").exists());

    // Again to the same file: refused, the file as it was.
    std::fs::write(&out, b"mine").expect("write");
    worker.send(Request::Download { id: 3, spec: down }).expect("send");
    let (again, _) = transfer_end(&mut ui, 3, None).await;
    assert!(matches!(&again.phase, Phase::Failed(m) if m.contains("exists")), "{again:?}");
    assert_eq!(std::fs::read(&out).expect("kept"), b"mine");

    // A 4 GiB (sparse) upload cancelled once bytes move: the image it made is deleted.
    let big = dir.path().join("big.raw");
    std::fs::File::create(&big).and_then(|f| f.set_len(4 << 30)).expect("sparse file");
    let spec = UploadSpec { file: big.display().to_string(), name: "cancel-me".into(), ..spec };
    worker.send(Request::Upload { id: 4, spec }).expect("send");
    let (cancelled, _) = transfer_end(&mut ui, 4, Some(&worker)).await;
    assert_eq!(cancelled.phase, Phase::Cancelled, "{cancelled:?}");
    let gone = cancelled.image_id.expect("it had made an image");
    let err = admin.get("image", &format!("/v2/images/{gone}")).await.expect_err("deleted");
    assert_eq!(err.status(), Some(reqwest::StatusCode::NOT_FOUND));

    // A file that is not there: a sentence, and no image made.
    let before = admin.get("image", "/v2/images").await.expect("list")["images"].as_array().map(Vec::len);
    let missing = UploadSpec {
        file: dir.path().join("nope.img").display().to_string(),
        name: String::new(),
        disk_format: String::new(),
        visibility: "private".into(),
        min_disk_gb: 0,
        min_ram_mb: 0,
    };
    worker.send(Request::Upload { id: 5, spec: missing }).expect("send");
    let (failed, _) = transfer_end(&mut ui, 5, None).await;
    assert!(matches!(&failed.phase, Phase::Failed(m) if m.contains("nope.img")), "{failed:?}");
    let after = admin.get("image", "/v2/images").await.expect("list")["images"].as_array().map(Vec::len);
    assert_eq!(before, after);
}

/// The security group views through the worker against the real Neutron and Nova APIs: a group
/// made from its form (Neutron gives it its egress rules), a rule from the rule form, listed
/// with the group's name and its ports; an instance launched with the group, then moved to
/// `default` with the instance-groups form; the ports list shows the port's group; a rule and
/// the group deleted.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_manages_security_groups() {
    use meridian_tui::overlays::Create;
    use meridian_tui::overlays::create::RuleSpec;
    use meridian_tui::worker::{Kind, LaunchSpec, Listing, Request, Response};

    let server = Server::start();
    let _agent = Agent::start(&server, "sg-host");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let (worker, mut ui) = admin_worker(&server).await;
    async fn listed(ui: &mut tokio::sync::mpsc::UnboundedReceiver<Response>, kind: Kind) -> Listing {
        loop {
            match next(ui).await {
                Response::Listed(l) if l.kind() == kind => return l,
                Response::Failed { message, .. } => panic!("{message}"),
                _ => {}
            }
        }
    }

    worker.send(Request::Create(Create::SecGroup { name: "web".into(), description: "http".into() })).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Created { kind: Kind::SecGroups, .. }));
    worker.send(Request::List(Kind::SecGroups)).expect("send");
    let Listing::SecGroups(groups) = listed(&mut ui, Kind::SecGroups).await else { unreachable!() };
    let web = groups.iter().find(|g| g.name == "web").expect("web listed").clone();
    assert_eq!(web.security_group_rules.len(), 2, "Neutron's egress rules: {:?}", web.raw);

    let rule = RuleSpec {
        group_id: web.id.clone(),
        direction: "ingress".into(),
        ethertype: "IPv4".into(),
        protocol: Some("tcp".into()),
        port_range_min: Some(8000),
        port_range_max: Some(8100),
        remote_ip_prefix: Some("192.0.2.0/24".into()),
        remote_group_id: None,
        description: "alt http".into(),
    };
    worker.send(Request::Create(Create::SecRule(rule.clone()))).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Created { kind: Kind::SecRules, .. }));
    // The same rule again: Neutron's 409, in words.
    worker.send(Request::Create(Create::SecRule(rule))).expect("send");
    match next(&mut ui).await {
        Response::Failed { message, .. } => assert!(message.contains("409"), "{message}"),
        other => panic!("expected the duplicate refused, got {other:?}"),
    }
    worker.send(Request::List(Kind::SecRules)).expect("send");
    let Listing::SecRules(rules) = listed(&mut ui, Kind::SecRules).await else { unreachable!() };
    let mine = rules.iter().find(|r| r.group_name == "web" && r.direction == "ingress").expect("the rule");
    assert_eq!((mine.ports().as_str(), mine.remote().as_str()), ("8000-8100", "192.0.2.0/24"));
    let rule_id = mine.id.clone();

    let spec = LaunchSpec {
        name: "sg-vm".into(),
        count: 1,
        image_id: cloud.image_id.clone(),
        flavor_id: "1".into(),
        network_ids: vec![cloud.network_id.clone()],
        key_name: None,
        user_data: None,
        security_groups: vec!["web".into()],
        boot_volume_gb: None,
        server_group: None,
    };
    worker.send(Request::Launch(spec)).expect("send");
    let vm = loop {
        match next(&mut ui).await {
            Response::Launched(s) => break s[0].clone(),
            Response::Failed { message, .. } => panic!("{message}"),
            _ => {}
        }
    };
    let shown = admin.get("compute", &format!("/servers/{}", vm.id)).await.expect("server");
    assert_eq!(shown["server"]["security_groups"], serde_json::json!([{"name": "web"}]), "{shown}");

    worker
        .send(Request::Create(Create::ServerGroups {
            server_id: vm.id.clone(),
            server_name: "sg-vm".into(),
            add: vec!["default".into()],
            remove: vec!["web".into()],
        }))
        .expect("send");
    match next(&mut ui).await {
        Response::GroupsChanged { server, .. } => assert_eq!(server, "sg-vm"),
        other => panic!("expected the groups changed, got {other:?}"),
    }
    let shown = admin.get("compute", &format!("/servers/{}/os-security-groups", vm.id)).await.expect("groups");
    let names: Vec<&str> =
        shown["security_groups"].as_array().expect("list").iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, ["default"], "{shown}");
    worker.send(Request::List(Kind::Ports)).expect("send");
    let Listing::Ports(ports) = listed(&mut ui, Kind::Ports).await else { unreachable!() };
    let port = ports.iter().find(|p| p.device_id.as_deref() == Some(vm.id.as_str())).expect("the vm's port");
    assert_eq!(port.security(), "default");

    worker.send(Request::Delete { kind: Kind::SecRules, id: rule_id.clone(), name: "web".into() }).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Deleted { kind: Kind::SecRules, .. }));
    let gone = admin.get("network", &format!("/v2.0/security-group-rules/{rule_id}")).await;
    assert_eq!(gone.expect_err("deleted").status(), Some(reqwest::StatusCode::NOT_FOUND));
    worker.send(Request::Delete { kind: Kind::SecGroups, id: web.id.clone(), name: "web".into() }).expect("send");
    assert!(matches!(next(&mut ui).await, Response::Deleted { kind: Kind::SecGroups, .. }));
    let gone = admin.get("network", &format!("/v2.0/security-groups/{}", web.id)).await;
    assert_eq!(gone.expect_err("deleted").status(), Some(reqwest::StatusCode::NOT_FOUND));
}

/// The Volumes view's extend (`E`) of an attached volume, through the dashboard's worker against
/// the real server and agent: the worker reads the cloud's version document, sends Cinder 3.42
/// (extend while in use), and the volume grows and stays in use.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_extends_an_attached_volume_at_3_42() {
    use meridian_tui::overlays::Create;
    use meridian_tui::overlays::create::VolumeRef;
    use meridian_tui::worker::{Kind, Request, Response};

    let server = Server::start();
    let agent = Agent::start(&server, "tui-vol-host");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let status = |want: &'static str, id: String| {
        let admin = &admin;
        async move { wait_volume(admin, &id, want, 60).await }
    };
    let v = admin.post("block-storage", "/volumes", &serde_json::json!({"volume": {"size": 1, "name": "grow"}})).await;
    let vid = v.expect("volume")["volume"]["id"].as_str().expect("id").to_string();
    status("available", vid.clone()).await;
    let body = serde_json::json!({"server": {"name": "holder", "imageRef": cloud.image_id, "flavorRef": "1",
        "networks": [{"uuid": cloud.network_id}]}});
    let sid =
        admin.post("compute", "/servers", &body).await.expect("boot")["server"]["id"].as_str().expect("id").to_string();
    let s = wait_server(&admin, &sid, &["ACTIVE", "ERROR"], 120).await;
    assert_eq!(s["status"], "ACTIVE", "{s}\n{}", agent.log_text());
    let attach = serde_json::json!({"volumeAttachment": {"volumeId": vid}});
    admin.post("compute", &format!("/servers/{sid}/os-volume_attachments"), &attach).await.expect("attach");
    status("in-use", vid.clone()).await;

    let (worker, mut ui) = admin_worker(&server).await;
    let volume = VolumeRef { id: vid.clone(), name: "grow".into(), size_gb: 1, attached: Some((sid, "holder".into())) };
    worker.send(Request::Create(Create::Extend { volume, size_gb: 2 })).expect("send");
    match next(&mut ui).await {
        Response::Did { kind: Kind::Volumes, message } => {
            assert!(message.contains("extending volume grow"), "{message}")
        }
        other => panic!("expected the extend, got {other:?}"),
    }
    let v = status("in-use", vid.clone()).await;
    assert_eq!(v["size"], 2, "{v}");
    let file = agent.state_dir.join("volumes").join(format!("{vid}.raw"));
    assert_eq!(std::fs::metadata(&file).expect("volume file").len(), 2 << 30);
}

/// The wizard's "Volume" field boots from a new volume made from the chosen image (what
/// `server create --boot-from-volume` sends): the instance goes ACTIVE on its volume, shows
/// no image, and deleting it from the dashboard takes the volume too (delete_on_termination).
#[tokio::test(flavor = "multi_thread")]
async fn launch_from_a_new_volume_through_the_wizard() {
    let server = Server::start();
    let agent = Agent::start(&server, "tui-bfv");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;

    let dir = tempfile::tempdir().expect("tmp");
    let (script, log) = write_script(dir.path(), &server, &[]);
    let tmux = Tmux::start(&script, "bfv");
    let mut seen = Vec::new();
    let dump = |what: &str| {
        format!(
            "{what}\nmeridian log:\n{}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            agent.log_text()
        )
    };
    tmux.wait("the instance list", 30, &mut seen, |s| s.contains("Instances [0]"));
    tmux.type_text("c");
    tmux.wait("the wizard", 10, &mut seen, |s| s.contains("Launch instances"));
    tmux.type_text("bfv-vm");
    // Name → Count → Volume: a 1 GB boot volume.
    tmux.keys(&["Tab", "Tab"]);
    tmux.type_text("1");
    tmux.keys(&["Enter"]);
    tmux.wait("the image list", 10, &mut seen, |s| s.contains("Search:") && s.contains("tiny"));
    tmux.type_text("tiny");
    tmux.keys(&["Enter"]);
    tmux.wait("the flavor list", 10, &mut seen, |s| s.contains("m1.tiny") && s.contains("vCPU"));
    tmux.keys(&["Enter"]);
    tmux.wait("the network list", 10, &mut seen, |s| s.contains("[x] net"));
    tmux.keys(&["Enter"]);
    tmux.wait("the security groups", 10, &mut seen, |s| s.contains("[x] default"));
    tmux.keys(&["Enter"]);
    tmux.wait("the key pair step", 10, &mut seen, |s| s.contains("(no key pair)"));
    tmux.keys(&["Enter"]);
    tmux.wait("the user data step", 10, &mut seen, |s| s.contains("user data"));
    tmux.keys(&["Tab"]);
    tmux.wait("the review", 10, &mut seen, |s| s.contains("Enter: launch") && s.contains("bfv-vm"));
    tmux.keys(&["Enter"]);
    tmux.wait(&dump("ACTIVE"), 90, &mut seen, |s| row(s, "bfv-vm").is_some_and(|r| r.contains("ACTIVE")));

    // The cloud booted it from a volume of 1 GB made from the image.
    let list = admin.get("compute", "/servers/detail").await.expect("list");
    let s = list["servers"][0].clone();
    assert_eq!(s["image"], "", "{s}");
    let vols = s["os-extended-volumes:volumes_attached"].as_array().cloned().unwrap_or_default();
    assert_eq!(vols.len(), 1, "{s}");
    let vid = vols[0]["id"].as_str().expect("volume id").to_string();
    let v = admin.get("block-storage", &format!("/volumes/{vid}")).await.expect("volume")["volume"].clone();
    assert_eq!(
        (v["size"].as_i64(), v["status"].as_str(), v["bootable"].as_str()),
        (Some(1), Some("in-use"), Some("true"))
    );
    assert!(v["volume_image_metadata"]["image_name"] == "tiny", "{v}");

    tmux.keys(&["C-d"]);
    tmux.wait("the confirmation", 10, &mut seen, |s| s.contains("Delete instance bfv-vm?"));
    tmux.type_text("y");
    tmux.wait(&dump("the row to go"), 60, &mut seen, |s| row(s, "bfv-vm").is_none() && s.contains("Instances [0]"));
    let mut gone = false;
    for _ in 0..200 {
        if admin.get("block-storage", &format!("/volumes/{vid}")).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the boot volume outlived its server despite delete_on_termination");
    tmux.type_text("q");
    tmux.wait("meridian to exit", 10, &mut seen, |s| s.contains("meridian exited: 0"));
}

/// Resize through the dialog and confirm through the VERIFY_RESIZE prompt: `V` lists the
/// flavors with the current one marked, Enter resizes to the one selected (the next size up),
/// the row reaches VERIFY_RESIZE with the hint line saying what to do, `V` `c` confirms, and
/// the cloud agrees (real server and agent, libvirt's test driver).
#[tokio::test(flavor = "multi_thread")]
async fn resize_and_confirm_through_the_dialog() {
    let server = Server::start();
    let agent = Agent::start(&server, "resize-host");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let created = admin
        .post(
            "compute",
            "/servers",
            &serde_json::json!({"server": {"name": "rz", "imageRef": cloud.image_id, "flavorRef": "42",
                "networks": [{"uuid": cloud.network_id}]}}),
        )
        .await
        .expect("create");
    let id = created["server"]["id"].as_str().expect("id").to_string();
    wait_server(&admin, &id, &["ACTIVE"], 90).await;

    let dir = tempfile::tempdir().expect("tmp");
    let (script, log) = write_script(dir.path(), &server, &[]);
    let tmux = Tmux::start(&script, "resize");
    let mut seen = Vec::new();
    let dump = |what: &str| {
        format!(
            "{what}\nmeridian log:\n{}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            agent.log_text()
        )
    };
    tmux.wait("the ACTIVE row", 30, &mut seen, |s| row(s, "rz").is_some_and(|r| r.contains("ACTIVE")));
    tmux.type_text("V");
    let s = tmux.wait("the flavor dialog", 10, &mut seen, |s| {
        s.contains("resize rz") && s.lines().any(|l| l.contains("m1.nano") && l.contains("(current)"))
    });
    assert!(s.lines().any(|l| l.contains("› m1.micro")), "the next size up is selected:\n{s}");
    tmux.keys(&["Enter"]);
    tmux.wait(&dump("VERIFY_RESIZE and what to do"), 60, &mut seen, |s| {
        row(s, "rz").is_some_and(|r| r.contains("VERIFY_RE") && r.contains("m1.micro"))
            && s.contains("VERIFY_RESIZE <V>confirm or revert the resize")
    });
    tmux.type_text("V");
    tmux.wait("the confirm/revert prompt", 10, &mut seen, |s| {
        s.contains("finish the resize of rz") && s.contains("keep m1.micro")
    });
    tmux.type_text("c");
    tmux.wait(&dump("ACTIVE with the new flavor"), 60, &mut seen, |s| {
        row(s, "rz").is_some_and(|r| r.contains("ACTIVE") && r.contains("m1.micro"))
    });
    let v = admin.get("compute", &format!("/servers/{id}")).await.expect("show");
    assert_eq!(
        (v["server"]["status"].as_str(), v["server"]["flavor"]["id"].as_str()),
        (Some("ACTIVE"), Some("84")),
        "{v}"
    );
    // The walk passed through the states the live view showed.
    assert!(seen.iter().any(|s| row(s, "rz").is_some_and(|r| r.contains("RESIZE"))), "RESIZE was shown");
}

/// In a real terminal: `c` in `:servergroups` creates an anti-affinity group and it is listed.
#[tokio::test(flavor = "multi_thread")]
async fn create_a_server_group_from_its_view() {
    let server = Server::start();
    let admin = server.admin().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (script, _log) = write_script(dir.path(), &server, &["--poll"]);
    let tmux = Tmux::start(&script, "srvgroups");
    let mut seen = Vec::new();
    tmux.wait("the instance list", 30, &mut seen, |s| s.contains("Instances [0]"));
    tmux.type_text(":servergroups");
    tmux.keys(&["Enter"]);
    tmux.wait("the server groups view", 10, &mut seen, |s| s.contains("Server groups [0]"));
    tmux.type_text("c");
    tmux.wait("the form", 10, &mut seen, |s| s.contains("Create server group"));
    tmux.type_text("tmux-apart");
    // Policy (anti-affinity by default), max per host empty: Enter on the last field creates.
    tmux.keys(&["Enter", "Enter", "Enter"]);
    tmux.wait("the new group listed", 20, &mut seen, |s| {
        row(s, "tmux-apart").is_some_and(|r| r.contains("anti-affinity"))
    });
    let groups = admin.get("compute", "/os-server-groups").await.expect("list");
    assert_eq!(groups["server_groups"][0]["name"], "tmux-apart", "{groups}");
    tmux.type_text("q");
    tmux.wait("meridian to exit", 10, &mut seen, |s| s.contains("meridian exited: 0"));
}
