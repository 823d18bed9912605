//! The dashboard's worker driven without a terminal: the tests that check what the TUI sends
//! and what it makes of the answers, against the real server.

use std::time::Duration;

use meridian_tui::worker::{ProfileBox, Request, Response};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::{ADMIN_PASSWORD, Server};

/// The admin's login profile for `server`, as the dashboard's login form fills it.
pub fn admin_profile(server: &Server) -> meridian_tui::config::Profile {
    meridian_tui::config::Profile {
        name: "test".into(),
        auth_url: server.auth_url(),
        username: "admin".into(),
        password: Some(ADMIN_PASSWORD.into()),
        project_name: "admin".into(),
        user_domain: "Default".into(),
        project_domain: "Default".into(),
        ..meridian_tui::config::Profile::default()
    }
}

/// The dashboard's worker (no live tracking), logged in to `server` as the admin, and the
/// channel its responses come back on.
pub async fn admin_worker(server: &Server) -> (UnboundedSender<Request>, UnboundedReceiver<Response>) {
    let (ui_tx, mut ui) = tokio::sync::mpsc::unbounded_channel();
    let worker = meridian_tui::worker::spawn(ui_tx, false);
    worker.send(Request::Login(Box::new(ProfileBox(admin_profile(server))))).expect("send");
    let answer = next(&mut ui).await;
    assert!(matches!(answer, Response::LoggedIn(_)), "login: {answer:?}");
    (worker, ui)
}

/// The worker's next response that is not live-tracking chatter.
pub async fn next(ui: &mut UnboundedReceiver<Response>) -> Response {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(30), ui.recv()).await.expect("a response").expect("open");
        if !matches!(r, Response::LiveMode(_) | Response::ServerUpdate(_)) {
            return r;
        }
    }
}
