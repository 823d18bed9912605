//! First-start setup: default domain, roles, the admin project and user, region, flavors and the
//! agent join token. Every step is "create if missing", so later starts (and several replicas
//! starting at once on PostgreSQL) never overwrite existing data.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::auth;
use crate::config::Config;
use crate::identity::DEFAULT_DOMAIN_ID;
use crate::store::compute::Flavor;
use crate::store::identity::{Project, User};
use crate::store::{Store, StoreError, new_hex_id};

/// devstack's default flavors: (id, name, MB RAM, GB disk, vCPUs).
pub const DEFAULT_FLAVORS: [(&str, &str, i64, i64, i64); 7] = [
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 20, 1),
    ("3", "m1.medium", 4096, 40, 2),
    ("4", "m1.large", 8192, 80, 4),
    ("5", "m1.xlarge", 16384, 160, 8),
    ("42", "m1.nano", 128, 1, 1),
    ("84", "m1.micro", 192, 1, 1),
];

/// What bootstrap did, for the start-up log.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Set when the admin password was generated: the file holding it.
    pub admin_password_file: Option<PathBuf>,
    pub agent_token_file: Option<PathBuf>,
}

pub async fn run(store: &Store, cfg: &Config) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    ignore_conflict(store.create_domain(DEFAULT_DOMAIN_ID, "Default", "The default domain").await)?;
    // Keystone's bootstrap roles, and its chain admin ⇒ manager ⇒ member ⇒ reader; `service`
    // stands alone (service users).
    for role in ["admin", "manager", "member", "reader", "service"] {
        if matches!(store.get_role_by_name(role).await, Err(StoreError::NotFound(_))) {
            ignore_conflict(store.create_role(&new_hex_id(), role, None).await)?;
        }
    }
    let admin_role = store.get_role_by_name("admin").await?;
    let manager_role = store.get_role_by_name("manager").await?;
    let member_role = store.get_role_by_name("member").await?;
    let reader_role = store.get_role_by_name("reader").await?;
    store.add_implied_role(&admin_role.id, &manager_role.id).await?;
    store.add_implied_role(&manager_role.id, &member_role.id).await?;
    store.add_implied_role(&member_role.id, &reader_role.id).await?;
    crate::identity::catalog::seed(store).await?;

    let project = match store.get_project_by_name(DEFAULT_DOMAIN_ID, "admin").await {
        Ok(p) => p,
        Err(StoreError::NotFound(_)) => {
            let p = Project {
                id: new_hex_id(),
                name: "admin".into(),
                domain_id: DEFAULT_DOMAIN_ID.into(),
                description: "Bootstrap project for initializing the cloud.".into(),
                enabled: 1,
                tags: "[]".into(),
                parent_id: None,
            };
            ignore_conflict(store.create_project(&p).await)?;
            store.get_project_by_name(DEFAULT_DOMAIN_ID, "admin").await?
        }
        Err(e) => return Err(e.into()),
    };

    if matches!(store.get_user_by_name(DEFAULT_DOMAIN_ID, "admin").await, Err(StoreError::NotFound(_))) {
        let password = match &cfg.admin_password {
            Some(p) => p.clone(),
            None => {
                let p = auth::random_secret()[..24].to_string();
                let file = cfg.data_dir.join("admin-password");
                write_secret(&file, &p)?;
                out.admin_password_file = Some(file);
                p
            }
        };
        let user = User {
            id: new_hex_id(),
            name: "admin".into(),
            domain_id: DEFAULT_DOMAIN_ID.into(),
            password_hash: Some(auth::hash_password(password).await?),
            enabled: 1,
            email: None,
            description: Some("Bootstrap administrator".into()),
            default_project_id: Some(project.id.clone()),
            extra: "{}".into(),
        };
        ignore_conflict(store.create_user(&user).await)?;
    }
    let admin = store.get_user_by_name(DEFAULT_DOMAIN_ID, "admin").await?;
    store.grant(&admin.id, &project.id, &admin_role.id).await?;
    // Keystone's bootstrap also makes the admin a system admin.
    store
        .add_grant(&crate::store::identity::Grant {
            actor_type: "user".into(),
            actor_id: admin.id.clone(),
            target_type: "system".into(),
            target_id: crate::store::identity::SYSTEM_ALL.into(),
            role_id: admin_role.id.clone(),
            inherited: 0,
        })
        .await?;

    for (id, name, ram, disk, vcpus) in DEFAULT_FLAVORS {
        if matches!(store.get_flavor(id).await, Err(StoreError::NotFound(_))) {
            let f = Flavor {
                id: id.into(),
                name: name.into(),
                vcpus,
                ram,
                disk,
                ephemeral: 0,
                swap: 0,
                rxtx_factor: 1.0,
                is_public: 1,
                description: None,
                extra_specs: "{}".into(),
            };
            ignore_conflict(store.create_flavor(&f).await)?;
        }
    }

    if store.setting("agent_token").await?.is_none() {
        let token = match &cfg.agent_token {
            Some(t) => t.clone(),
            None => {
                let t = auth::random_secret();
                let file = cfg.data_dir.join("agent-token");
                write_secret(&file, &t)?;
                out.agent_token_file = Some(file);
                t
            }
        };
        store.set_setting("agent_token", &token).await?;
    }
    Ok(out)
}

fn ignore_conflict(r: Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Err(StoreError::Conflict(_)) => Ok(()),
        other => other,
    }
}

/// Writes a secret to a file only its owner can read.
fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{value}")?;
    Ok(())
}
