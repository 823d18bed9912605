//! The retention task: every `[retention] interval_secs`, purge deleted servers and finished
//! work older than `deleted_instances_secs`, and expired tokens ([`crate::store::retention`]).

use std::time::Duration;

use crate::state::AppState;
use crate::store::StoreResult;
use crate::store::retention::{Batching, Cutoffs, Purged};

/// One pass with the configured window, now (what the loop runs; tests call it directly).
pub async fn run_once(state: &AppState) -> StoreResult<Purged> {
    let window = Duration::from_secs(state.cfg.retention.deleted_instances_secs);
    let purged = state.store.purge(&Cutoffs::older_than(window), &Batching::from(&state.cfg.retention)).await?;
    // Make the removal durable now rather than with the next acknowledged request.
    state.store.sync().await?;
    Ok(purged)
}

/// Runs [`run_once`] every `interval_secs`, the first time at start.
pub async fn retention_loop(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(state.cfg.retention.interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_once(&state).await {
            Ok(p) if p.total() > 0 => {
                let counts: Vec<String> =
                    p.tables().iter().filter(|(_, n)| *n > 0).map(|(t, n)| format!("{t}={n}")).collect();
                tracing::info!(purged = %counts.join(" "), "retention: old rows purged");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use meridian_common::agent::{PowerState, WorkEvent};
    use serde_json::{Value, json};

    use crate::store::Store;
    use crate::store::hosts::HostInventory;
    use crate::store::instances::Instance;
    use crate::testing::TestApp;

    async fn admin_project(app: &TestApp) -> String {
        let r = app.json(Method::GET, "/identity/v3/projects?name=admin", &app.admin_token, Value::Null).await;
        r.body["projects"][0]["id"].as_str().expect("project id").to_string()
    }

    async fn host(store: &Store) -> String {
        let inv = HostInventory {
            availability_zone: "nova".into(),
            hypervisor_type: "test".into(),
            cpu_arch: "x86_64".into(),
            libvirt_uri: "test:///default".into(),
            host_ip: "127.0.0.1".into(),
            vcpus: 8,
            memory_mb: 8192,
            disk_gb: 100,
            ..Default::default()
        };
        store.register_host("h1", &inv).await.expect("host")
    }

    /// An ACTIVE server of `project` on `host`, stored directly (no build needed).
    async fn server(store: &Store, id: &str, project: &str, host: &str) {
        let i = Instance {
            project_id: project.into(),
            user_id: "u".into(),
            host_id: Some(host.into()),
            ..crate::testing::instance(id)
        };
        store.create_instance(&i, None).await.expect("instance");
    }

    async fn scalar(store: &Store, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&mut *store.conn().await.expect("conn")).await.expect(sql)
    }

    /// `os-getConsoleOutput` answers with the host's console text and leaves none of it in the
    /// database: the work item carrying it is gone once the API has answered.
    #[tokio::test]
    async fn console_output_is_not_kept_after_the_answer() {
        let app = TestApp::new().await;
        let store = app.state.store.clone();
        let host_id = host(&store).await;
        server(&store, "s1", &admin_project(&app).await, &host_id).await;
        let text = "CONSOLE-LINE-1\nCONSOLE-LINE-2\n";
        // The host's side: lease the console request and answer it through the conductor, as
        // the agents' event endpoint does.
        let agent = {
            let state = app.state.clone();
            let host_id = host_id.clone();
            tokio::spawn(async move {
                loop {
                    for w in state.store.lease_work(&host_id, 60, 10).await.expect("lease") {
                        let done = WorkEvent::Done {
                            power_state: PowerState::Running,
                            console: Some(text.into()),
                            config_drive: false,
                            data: None,
                        };
                        crate::compute::conductor::on_event(&state, &w, done).await.expect("event");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
        };
        for _ in 0..3 {
            let r = app
                .json(
                    Method::POST,
                    "/compute/v2.1/servers/s1/action",
                    &app.admin_token,
                    json!({"os-getConsoleOutput": {"length": 50}}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert_eq!(r.body["output"], text);
        }
        agent.abort();
        assert_eq!(scalar(&store, "SELECT COUNT(*) FROM work WHERE result LIKE '%CONSOLE-LINE%'").await, 0);
        assert_eq!(scalar(&store, "SELECT COUNT(*) FROM work").await, 0, "no console work item is left");
    }

    /// A pass purges deletions older than the configured window (7 days by default) and keeps
    /// newer ones, which `changes-since` still lists.
    #[tokio::test]
    async fn a_pass_honours_the_configured_window() {
        let app = TestApp::new().await;
        let store = app.state.store.clone();
        let host_id = host(&store).await;
        let project = admin_project(&app).await;
        let days_ago = |d: i64| crate::store::fmt_time(chrono::Utc::now() - chrono::Duration::days(d));
        for (id, age) in [("eight-days", 8), ("six-days", 6)] {
            server(&store, id, &project, &host_id).await;
            store.mark_instance_deleted(id).await.expect("delete");
            sqlx::query("UPDATE instances SET terminated_at = $2, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(days_ago(age))
                .execute(&mut *store.conn().await.expect("conn"))
                .await
                .expect("backdate");
        }
        server(&store, "live", &project, &host_id).await;
        let purged = super::run_once(&app.state).await.expect("pass");
        assert_eq!(purged.instances, 1, "{purged:?}");
        let since = format!("/compute/v2.1/servers/detail?changes-since={}", days_ago(30));
        let r = app.json(Method::GET, &since, &app.admin_token, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let mut ids: Vec<&str> =
            r.body["servers"].as_array().expect("list").iter().filter_map(|s| s["id"].as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["live", "six-days"]);
        let r = app.json(Method::GET, "/compute/v2.1/servers/six-days", &app.admin_token, Value::Null).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "deleted servers stay 404 as before");
    }
}
