//! `meridian-server`: run the control plane (`serve`) or administer it offline (`admin`).

use anyhow::Context;

// mimalloc gives memory back to the OS after bursts (argon2 hashing takes 19 MiB per login);
// glibc's dynamic mmap threshold would keep such buffers resident for good.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

use meridian_server::config::{CommonArgs, Config, LogFormat};
use meridian_server::identity::DEFAULT_DOMAIN_ID;
use meridian_server::state::AppState;
use meridian_server::store::identity::{NameFilter, Project, User};
use meridian_server::store::retention::{Batching, Cutoffs};
use meridian_server::store::{Store, new_hex_id};
use meridian_server::{auth, bootstrap};

#[derive(Parser)]
#[command(name = "meridian-server", version, about = "Meridian control plane (Keystone, Nova, Glance, Neutron APIs)")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server in the foreground (a daemon under systemd or the quickstart script).
    Serve,
    /// Administer the cloud directly against its database (works while the server is down).
    #[command(subcommand)]
    Admin(Admin),
}

#[derive(Subcommand)]
enum Admin {
    /// Create a project in the Default domain.
    CreateProject {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Create a user; with --project, also grant --role (default member) on it.
    CreateUser {
        name: String,
        /// Password (default: generated and printed).
        #[arg(long, env = "MERIDIAN_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value = "member")]
        role: String,
        #[arg(long)]
        email: Option<String>,
    },
    /// Grant a role (admin, member, reader, …) to a user on a project.
    Grant {
        #[arg(long)]
        user: String,
        #[arg(long)]
        project: String,
        role: String,
    },
    /// Set a new password for a user (and revoke their tokens).
    ResetPassword {
        user: String,
        /// New password (default: generated and printed).
        #[arg(long, env = "MERIDIAN_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// List projects.
    ListProjects,
    /// List users with their role assignments.
    ListUsers,
    /// Print the agent join token.
    AgentToken,
    /// Purge deleted servers (with their actions, timeline and work) and finished work items
    /// older than a duration, and expired tokens; prints the rows removed per table (as
    /// `nova-manage db archive_deleted_rows` + `purge` and `keystone-manage token_flush` do).
    Purge {
        /// How old a deletion must be: `30d`, `12h`, `3600s`, `1w 2d`, ….
        #[arg(long)]
        older_than: humantime::Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = cli.common.resolve()?;
    init_logging(cfg.log_format);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve => serve(cfg).await,
            Command::Admin(cmd) => admin(cfg, cmd).await,
        }
    });
    // Dropping the runtime would wait for every blocking task; a stuck one must not hold the
    // exit that `serve` already bounded.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn open(cfg: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let store = Store::open(&cfg.database_url).await.context("opening the database")?;
    let outcome = bootstrap::run(&store, cfg).await.context("bootstrapping")?;
    if let Some(f) = outcome.admin_password_file {
        tracing::warn!(file = %f.display(), "generated the admin password; it is stored in this file (mode 0600)");
    }
    if let Some(f) = outcome.agent_token_file {
        tracing::warn!(file = %f.display(), "generated the agent join token; it is stored in this file (mode 0600)");
    }
    Ok(store)
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let store = open(&cfg).await?;
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, public_url = %cfg.public_url, data_dir = %cfg.data_dir.display(), "meridian-server listening");
    let state = AppState::new(store, cfg);
    meridian_server::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("meridian-server stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn admin(cfg: Config, cmd: Admin) -> anyhow::Result<()> {
    let store = open(&cfg).await?;
    let result = run_admin(&store, &cfg, cmd).await;
    store.close().await;
    result
}

fn generated(password: Option<String>) -> (String, bool) {
    match password {
        Some(p) => (p, false),
        None => (auth::random_secret()[..20].to_string(), true),
    }
}

async fn run_admin(store: &Store, cfg: &Config, cmd: Admin) -> anyhow::Result<()> {
    match cmd {
        Admin::CreateProject { name, description } => {
            let p = Project {
                id: new_hex_id(),
                name: name.clone(),
                domain_id: DEFAULT_DOMAIN_ID.into(),
                description,
                enabled: 1,
                tags: "[]".into(),
                parent_id: None,
            };
            store.create_project(&p).await?;
            println!("created project {name} ({})", p.id);
        }
        Admin::CreateUser { name, password, project, role, email } => {
            let (password, was_generated) = generated(password);
            let u = User {
                id: new_hex_id(),
                name: name.clone(),
                domain_id: DEFAULT_DOMAIN_ID.into(),
                password_hash: Some(auth::hash_password(password.clone()).await?),
                enabled: 1,
                email,
                description: None,
                default_project_id: None,
                extra: "{}".into(),
            };
            let project = match &project {
                Some(p) => Some(store.get_project_by_name(DEFAULT_DOMAIN_ID, p).await?),
                None => None,
            };
            let role = store.get_role_by_name(&role).await?;
            store.create_user(&u).await?;
            println!("created user {name} ({})", u.id);
            if let Some(p) = project {
                store.grant(&u.id, &p.id, &role.id).await?;
                println!("granted {} on {}", role.name, p.name);
            }
            if was_generated {
                println!("password: {password}");
            }
        }
        Admin::Grant { user, project, role } => {
            let u = store.get_user_by_name(DEFAULT_DOMAIN_ID, &user).await?;
            let p = store.get_project_by_name(DEFAULT_DOMAIN_ID, &project).await?;
            let r = store.get_role_by_name(&role).await?;
            store.grant(&u.id, &p.id, &r.id).await?;
            println!("granted {role} to {user} on {project}");
        }
        Admin::ResetPassword { user, password } => {
            let (password, was_generated) = generated(password);
            let mut u = store.get_user_by_name(DEFAULT_DOMAIN_ID, &user).await?;
            u.password_hash = Some(auth::hash_password(password.clone()).await?);
            store.update_user(&u).await?;
            store.revoke_user_tokens(&u.id).await?;
            println!("password of {user} reset; existing tokens revoked");
            if was_generated {
                println!("password: {password}");
            }
        }
        Admin::ListProjects => {
            for p in store.list_projects(&NameFilter::default()).await? {
                println!("{}  {}  {}", p.id, p.name, if p.enabled != 0 { "enabled" } else { "disabled" });
            }
        }
        Admin::ListUsers => {
            for u in store.list_users(&NameFilter::default()).await? {
                let mut grants = Vec::new();
                for g in store.list_grants(Some(("user", &u.id)), None, None, None).await? {
                    let target = match g.target_type.as_str() {
                        "project" => store.get_project(&g.target_id).await?.name,
                        "domain" => format!("domain {}", store.get_domain(&g.target_id).await?.name),
                        _ => "system".to_string(),
                    };
                    let r = store.get_role(&g.role_id).await?;
                    grants.push(format!("{target}:{}", r.name));
                }
                println!("{}  {}  {}", u.id, u.name, grants.join(","));
            }
        }
        Admin::AgentToken => {
            println!("{}", store.setting("agent_token").await?.unwrap_or_default());
        }
        Admin::Purge { older_than } => {
            let cutoffs = Cutoffs::older_than(older_than.into());
            // `[retention]`'s batches and pauses: the server may be running beside it.
            let batching = Batching::from(&cfg.retention);
            let purged = store.purge(&cutoffs, &batching).await?;
            println!("purged what ended before {}:", cutoffs.deleted_before);
            for (table, n) in purged.tables() {
                println!("  {table:<24}{n}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_age(args: &[&str]) -> Result<std::time::Duration, clap::Error> {
        let cli = Cli::try_parse_from([&["meridian-server", "admin", "purge"], args].concat())?;
        match cli.command {
            Command::Admin(Admin::Purge { older_than }) => Ok(older_than.into()),
            _ => panic!("not the purge command"),
        }
    }

    #[test]
    fn purge_takes_durations_as_operators_write_them() {
        let day = 24 * 3600;
        assert_eq!(purge_age(&["--older-than", "30d"]).expect("30d").as_secs(), 30 * day);
        assert_eq!(purge_age(&["--older-than", "12h"]).expect("12h").as_secs(), 12 * 3600);
        assert_eq!(purge_age(&["--older-than", "3600s"]).expect("3600s").as_secs(), 3600);
        assert_eq!(purge_age(&["--older-than", "1w 2d"]).expect("1w 2d").as_secs(), 9 * day);
        for bad in ["soon", "30", "-1d"] {
            assert!(purge_age(&["--older-than", bad]).is_err(), "{bad}");
        }
        assert!(purge_age(&[]).is_err(), "--older-than is required");
    }
}
