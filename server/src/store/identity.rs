//! Keystone's tables: domains, projects, users, groups, roles, grants and tokens.

use super::sql::Sql;
use super::{Store, StoreError, StoreResult, flag, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Domain {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
    pub enabled: i64,
    pub tags: String,
    /// `None` for a top-level project (whose parent is its domain).
    pub parent_id: Option<String>,
}

/// `Debug` redacts `password_hash` (an offline-crackable secret).
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub password_hash: Option<String>,
    pub enabled: i64,
    pub email: Option<String>,
    pub description: Option<String>,
    pub default_project_id: Option<String>,
    /// Attributes Keystone keeps without knowing them (a JSON object), e.g. `project_id`.
    pub extra: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// Set for a domain-specific role (never placed in tokens; only what it implies is).
    pub domain_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
}

/// One role grant (see migration 0005): `actor_type` is `user` | `group`, `target_type` is
/// `project` | `domain` | `system` (whose target id is `all`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Grant {
    pub actor_type: String,
    pub actor_id: String,
    pub target_type: String,
    pub target_id: String,
    pub role_id: String,
    pub inherited: i64,
}

/// What a token (or a role check) is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Project(String),
    Domain(String),
    System,
}

/// The system target's id, as Keystone names it.
pub const SYSTEM_ALL: &str = "all";

/// A token. `id` is the bearer secret itself in memory; the `tokens` table keys rows by its
/// [`token_hash`] instead, so the database never holds a usable token. `Debug` redacts `id`.
#[derive(Clone, sqlx::FromRow)]
pub struct Token {
    pub id: String,
    pub user_id: String,
    pub project_id: Option<String>,
    pub methods: String,
    pub audit_id: String,
    pub issued_at: String,
    pub expires_at: String,
    pub revoked: i64,
    pub domain_id: Option<String>,
    pub system_scope: i64,
    pub app_cred_id: Option<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("domain_id", &self.domain_id)
            .field("password_hash", &self.password_hash.as_ref().map(|_| REDACTED))
            .field("enabled", &self.enabled)
            .field("email", &self.email)
            .field("description", &self.description)
            .field("default_project_id", &self.default_project_id)
            .field("extra", &self.extra)
            .finish()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &REDACTED)
            .field("user_id", &self.user_id)
            .field("project_id", &self.project_id)
            .field("methods", &self.methods)
            .field("audit_id", &self.audit_id)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .field("domain_id", &self.domain_id)
            .field("system_scope", &self.system_scope)
            .field("app_cred_id", &self.app_cred_id)
            .finish()
    }
}

/// What `Debug` shows in place of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// What a token id resolves to (see [`Store::token_context`]).
#[derive(Debug, Clone)]
pub struct TokenContext {
    pub token: Token,
    pub user: User,
    pub user_domain: Domain,
    /// `None` for unscoped tokens, and for scoped ones whose project is gone.
    pub project: Option<(Project, Domain)>,
    /// The domain of a domain-scoped token (`None` also when it is gone).
    pub domain: Option<Domain>,
}

/// Filters for project and user listings.
#[derive(Debug, Default, Clone)]
pub struct NameFilter {
    pub domain_id: Option<String>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// Projects only: the parent, a project or (for top-level projects) a domain.
    pub parent_id: Option<String>,
}

const PROJECT_COLS: &str = "id, name, domain_id, description, enabled, tags, parent_id";
const USER_COLS: &str = "id, name, domain_id, password_hash, enabled, email, description, default_project_id, extra";
const ROLE_COLS: &str = "id, name, description, domain_id";
const ROLE_COLS_R: &str = "r.id, r.name, r.description, r.domain_id";
const TOKEN_COLS: &str =
    "id, user_id, project_id, methods, audit_id, issued_at, expires_at, revoked, domain_id, system_scope, app_cred_id";

impl Store {
    // ---- domains ----

    pub async fn create_domain(&self, id: &str, name: &str, description: &str) -> StoreResult<()> {
        self.create_domain_with(id, name, description, true).await
    }

    pub async fn create_domain_with(&self, id: &str, name: &str, description: &str, enabled: bool) -> StoreResult<()> {
        sqlx::query("INSERT INTO domains (id, name, description, enabled, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(name)
            .bind(description)
            .bind(flag(enabled))
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate entry: domain {name} already exists.")))?;
        Ok(())
    }

    pub async fn get_domain(&self, id: &str) -> StoreResult<Domain> {
        self.fetch_found("SELECT id, name, description, enabled FROM domains WHERE id = $1", &[id], || {
            format!("Could not find domain: {id}.")
        })
        .await
    }

    pub async fn get_domain_by_name(&self, name: &str) -> StoreResult<Domain> {
        self.fetch_found("SELECT id, name, description, enabled FROM domains WHERE name = $1", &[name], || {
            format!("Could not find domain: {name}.")
        })
        .await
    }

    pub async fn list_domains(&self) -> StoreResult<Vec<Domain>> {
        Ok(sqlx::query_as("SELECT id, name, description, enabled FROM domains ORDER BY name")
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    pub async fn update_domain(&self, d: &Domain) -> StoreResult<()> {
        let done = sqlx::query("UPDATE domains SET name = $2, description = $3, enabled = $4 WHERE id = $1")
            .bind(&d.id)
            .bind(&d.name)
            .bind(&d.description)
            .bind(d.enabled)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate entry: domain {} already exists.", d.name)))?;
        found(done.rows_affected(), || format!("Could not find domain: {}.", d.id))
    }

    /// Deletes a domain with everything in it (projects, users, groups, its roles and every
    /// grant on or to them), in one transaction, as Keystone does.
    pub async fn delete_domain(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for (table, target) in [("projects", "project"), ("users", "user"), ("groups", "group")] {
            let column = if target == "project" { "target" } else { "actor" };
            sqlx::query(&format!(
                "DELETE FROM grants WHERE {column}_type = $2 AND {column}_id IN (SELECT id FROM {table} WHERE domain_id = $1)"
            ))
            .bind(id)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM grants WHERE target_type = 'domain' AND target_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Parents are projects of the same domain: unlink them so the rows can go in any order.
        sqlx::query("UPDATE projects SET parent_id = NULL WHERE domain_id = $1").bind(id).execute(&mut *tx).await?;
        for table in ["projects", "users", "groups"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE domain_id = $1")).bind(id).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM domains WHERE id = $1").bind(id).execute(&mut *tx).await?;
        found(done.rows_affected(), || format!("Could not find domain: {id}."))?;
        tx.commit().await?;
        Ok(())
    }

    // ---- projects ----

    pub async fn create_project(&self, p: &Project) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO projects (id, name, domain_id, description, enabled, tags, parent_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.domain_id)
        .bind(&p.description)
        .bind(p.enabled)
        .bind(&p.tags)
        .bind(p.parent_id.as_deref())
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| {
            conflict(e, format!("Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain : {}.", p.name))
        })?;
        Ok(())
    }

    pub async fn get_project(&self, id: &str) -> StoreResult<Project> {
        self.fetch_found(&format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1"), &[id], || {
            format!("Could not find project: {id}.")
        })
        .await
    }

    pub async fn get_project_by_name(&self, domain_id: &str, name: &str) -> StoreResult<Project> {
        self.fetch_found(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE domain_id = $1 AND name = $2"),
            &[domain_id, name],
            || format!("Could not find project: {name}."),
        )
        .await
    }

    pub async fn list_projects(&self, f: &NameFilter) -> StoreResult<Vec<Project>> {
        // A parent filter naming a domain lists that domain's top-level projects.
        let rows: Vec<Project> = sqlx::query_as(&format!(
            "SELECT {PROJECT_COLS} FROM projects \
             WHERE ($1 IS NULL OR domain_id = $1) AND ($2 IS NULL OR name = $2) \
             AND ($3 IS NULL OR enabled = $3) \
             AND ($4 IS NULL OR parent_id = $4 OR (parent_id IS NULL AND domain_id = $4)) ORDER BY name"
        ))
        .bind(f.domain_id.as_deref())
        .bind(f.name.as_deref())
        .bind(f.enabled.map(flag))
        .bind(f.parent_id.as_deref())
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows)
    }

    /// Updates name, description and enabled. Tags are left alone: they change only through
    /// [`Store::replace_project_tags`], so an update racing a tag edit cannot undo it.
    pub async fn update_project(&self, p: &Project) -> StoreResult<()> {
        let done = sqlx::query("UPDATE projects SET name = $2, description = $3, enabled = $4 WHERE id = $1")
            .bind(&p.id)
            .bind(&p.name)
            .bind(&p.description)
            .bind(p.enabled)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate entry: project {} already exists in this domain.", p.name)))?;
        found(done.rows_affected(), || format!("Could not find project: {}.", p.id))
    }

    /// Compare-and-set of a project's tags (a JSON array): stores `new` only if the tags are
    /// still `old`, and says whether it did. Read-modify-write through this cannot lose a
    /// concurrent edit on either backend (PostgreSQL's READ COMMITTED would, with a plain
    /// UPDATE after a SELECT). Not found is reported as such, not as a lost race.
    pub async fn replace_project_tags(&self, id: &str, old: &str, new: &str) -> StoreResult<bool> {
        let done =
            self.execute_keys("UPDATE projects SET tags = $3 WHERE id = $1 AND tags = $2", &[id, old, new]).await?;
        if done == 1 {
            return Ok(true);
        }
        self.get_project(id).await?;
        Ok(false)
    }

    /// Whether any project has this one as its parent.
    pub async fn has_subprojects(&self, id: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE parent_id = $1")
            .bind(id)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(n > 0)
    }

    pub async fn delete_project(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM grants WHERE target_type = 'project' AND target_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM projects WHERE id = $1").bind(id).execute(&mut *tx).await?;
        found(done.rows_affected(), || format!("Could not find project: {id}."))?;
        tx.commit().await?;
        Ok(())
    }

    /// The project's ancestors, nearest first (not including its domain).
    pub async fn project_ancestors(&self, p: &Project) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        let mut parent = p.parent_id.clone();
        while let Some(id) = parent {
            // A cycle cannot be built through the API; the bound is a guard all the same.
            if out.contains(&id) || out.len() > 64 {
                break;
            }
            parent = self.get_project(&id).await?.parent_id;
            out.push(id);
        }
        Ok(out)
    }

    // ---- users ----

    pub async fn create_user(&self, u: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, name, domain_id, password_hash, enabled, email, description, \
             default_project_id, extra, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&u.id)
        .bind(&u.name)
        .bind(&u.domain_id)
        .bind(u.password_hash.as_deref())
        .bind(u.enabled)
        .bind(u.email.as_deref())
        .bind(u.description.as_deref())
        .bind(u.default_project_id.as_deref())
        .bind(&u.extra)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| {
            conflict(
                e,
                format!(
                    "Conflict occurred attempting to store user - Duplicate entry found with name {} at domain ID {}.",
                    u.name, u.domain_id
                ),
            )
        })?;
        Ok(())
    }

    pub async fn get_user(&self, id: &str) -> StoreResult<User> {
        self.fetch_found(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"), &[id], || {
            format!("Could not find user: {id}.")
        })
        .await
    }

    pub async fn get_user_by_name(&self, domain_id: &str, name: &str) -> StoreResult<User> {
        self.fetch_found(
            &format!("SELECT {USER_COLS} FROM users WHERE domain_id = $1 AND name = $2"),
            &[domain_id, name],
            || format!("Could not find user: {name}."),
        )
        .await
    }

    pub async fn list_users(&self, f: &NameFilter) -> StoreResult<Vec<User>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {USER_COLS} FROM users WHERE ($1 IS NULL OR domain_id = $1) \
             AND ($2 IS NULL OR name = $2) AND ($3 IS NULL OR enabled = $3) ORDER BY name"
        ))
        .bind(f.domain_id.as_deref())
        .bind(f.name.as_deref())
        .bind(f.enabled.map(flag))
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Saves a user. An enabled user is also unlocked (failures forgotten), as Keystone's
    /// `enabled` setter does on every update: an admin's password reset or re-enable unlocks.
    pub async fn update_user(&self, u: &User) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE users SET name = $2, password_hash = $3, enabled = $4, email = $5, \
             description = $6, default_project_id = $7, extra = $8, \
             failed_auth_count = CASE WHEN $4 <> 0 THEN 0 ELSE failed_auth_count END, \
             failed_auth_at = CASE WHEN $4 <> 0 THEN NULL ELSE failed_auth_at END WHERE id = $1",
        )
        .bind(&u.id)
        .bind(&u.name)
        .bind(u.password_hash.as_deref())
        .bind(u.enabled)
        .bind(u.email.as_deref())
        .bind(u.description.as_deref())
        .bind(u.default_project_id.as_deref())
        .bind(&u.extra)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| conflict(e, format!("Duplicate entry: user {} already exists in this domain.", u.name)))?;
        found(done.rows_affected(), || format!("Could not find user: {}.", u.id))
    }

    pub async fn delete_user(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM grants WHERE actor_type = 'user' AND actor_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
        found(done.rows_affected(), || format!("Could not find user: {id}."))?;
        tx.commit().await?;
        Ok(())
    }

    // ---- groups ----

    pub async fn create_group(&self, g: &Group) -> StoreResult<()> {
        sqlx::query("INSERT INTO groups (id, name, domain_id, description, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&g.id)
            .bind(&g.name)
            .bind(&g.domain_id)
            .bind(&g.description)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| {
                conflict(e, format!("Duplicate entry: group {} already exists in domain {}.", g.name, g.domain_id))
            })?;
        Ok(())
    }

    pub async fn get_group(&self, id: &str) -> StoreResult<Group> {
        self.fetch_found("SELECT id, name, domain_id, description FROM groups WHERE id = $1", &[id], || {
            format!("Could not find group: {id}.")
        })
        .await
    }

    pub async fn list_groups(&self, domain_id: Option<&str>, name: Option<&str>) -> StoreResult<Vec<Group>> {
        Ok(sqlx::query_as(
            "SELECT id, name, domain_id, description FROM groups WHERE ($1 IS NULL OR domain_id = $1) \
             AND ($2 IS NULL OR name = $2) ORDER BY name",
        )
        .bind(domain_id)
        .bind(name)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn update_group(&self, g: &Group) -> StoreResult<()> {
        let done = sqlx::query("UPDATE groups SET name = $2, description = $3 WHERE id = $1")
            .bind(&g.id)
            .bind(&g.name)
            .bind(&g.description)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate entry: group {} already exists in this domain.", g.name)))?;
        found(done.rows_affected(), || format!("Could not find group: {}.", g.id))
    }

    pub async fn delete_group(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM grants WHERE actor_type = 'group' AND actor_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM groups WHERE id = $1").bind(id).execute(&mut *tx).await?;
        found(done.rows_affected(), || format!("Could not find group: {id}."))?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_group_member(&self, group_id: &str, user_id: &str) -> StoreResult<()> {
        self.execute_keys(
            "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[group_id, user_id],
        )
        .await?;
        Ok(())
    }

    pub async fn remove_group_member(&self, group_id: &str, user_id: &str) -> StoreResult<()> {
        let done = self
            .execute_keys("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2", &[group_id, user_id])
            .await?;
        found(done, || format!("User '{user_id}' not found in group '{group_id}'."))
    }

    pub async fn is_group_member(&self, group_id: &str, user_id: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user_id)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(n > 0)
    }

    pub async fn group_users(&self, group_id: &str) -> StoreResult<Vec<User>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {USER_COLS} FROM users WHERE id IN (SELECT user_id FROM group_members WHERE group_id = $1) \
             ORDER BY name"
        ))
        .bind(group_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn user_groups(&self, user_id: &str) -> StoreResult<Vec<Group>> {
        Ok(sqlx::query_as(
            "SELECT id, name, domain_id, description FROM groups \
             WHERE id IN (SELECT group_id FROM group_members WHERE user_id = $1) ORDER BY name",
        )
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    // ---- roles ----

    pub async fn create_role(&self, id: &str, name: &str, description: Option<&str>) -> StoreResult<()> {
        self.create_role_in(id, name, description, None).await
    }

    pub async fn create_role_in(
        &self,
        id: &str,
        name: &str,
        description: Option<&str>,
        domain_id: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO roles (id, name, description, domain_id, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(name)
            .bind(description)
            .bind(domain_id)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate entry: role {name} already exists.")))?;
        Ok(())
    }

    pub async fn get_role(&self, id: &str) -> StoreResult<Role> {
        self.fetch_found(&format!("SELECT {ROLE_COLS} FROM roles WHERE id = $1"), &[id], || {
            format!("Could not find role: {id}.")
        })
        .await
    }

    /// A global role by name.
    pub async fn get_role_by_name(&self, name: &str) -> StoreResult<Role> {
        self.fetch_found(
            &format!("SELECT {ROLE_COLS} FROM roles WHERE name = $1 AND domain_id IS NULL"),
            &[name],
            || format!("Could not find role: {name}."),
        )
        .await
    }

    /// Global roles, or a domain's own roles when `domain_id` is given (as Keystone lists).
    pub async fn list_roles(&self, name: Option<&str>, domain_id: Option<&str>) -> StoreResult<Vec<Role>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ROLE_COLS} FROM roles WHERE ($1 IS NULL OR name = $1) \
             AND (($2 IS NULL AND domain_id IS NULL) OR domain_id = $2) ORDER BY name"
        ))
        .bind(name)
        .bind(domain_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn update_role(&self, r: &Role) -> StoreResult<()> {
        let done = sqlx::query("UPDATE roles SET name = $2, description = $3 WHERE id = $1")
            .bind(&r.id)
            .bind(&r.name)
            .bind(r.description.as_deref())
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate entry: role {} already exists.", r.name)))?;
        found(done.rows_affected(), || format!("Could not find role: {}.", r.id))
    }

    pub async fn delete_role(&self, id: &str) -> StoreResult<()> {
        let done = self.execute_keys("DELETE FROM roles WHERE id = $1", &[id]).await?;
        found(done, || format!("Could not find role: {id}."))
    }

    pub async fn add_implied_role(&self, prior: &str, implied: &str) -> StoreResult<()> {
        self.execute_keys(
            "INSERT INTO implied_roles (prior_role_id, implied_role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[prior, implied],
        )
        .await?;
        Ok(())
    }

    pub async fn remove_implied_role(&self, prior: &str, implied: &str) -> StoreResult<()> {
        let done = self
            .execute_keys(
                "DELETE FROM implied_roles WHERE prior_role_id = $1 AND implied_role_id = $2",
                &[prior, implied],
            )
            .await?;
        found(done, || format!("{prior} does not imply {implied}."))
    }

    /// Every inference rule as (prior role id, implied role id).
    pub async fn implied_roles(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as("SELECT prior_role_id, implied_role_id FROM implied_roles ORDER BY prior_role_id")
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    /// The roles, with every role they imply (transitively) added.
    pub async fn expand_implied(&self, direct: Vec<Role>) -> StoreResult<Vec<Role>> {
        if direct.is_empty() {
            return Ok(direct);
        }
        let rules = self.implied_roles().await?;
        let mut roles = direct;
        let mut i = 0;
        while i < roles.len() {
            let prior = roles[i].id.clone();
            for (p, implied) in &rules {
                if *p == prior && !roles.iter().any(|r| r.id == *implied) {
                    roles.push(self.get_role(implied).await?);
                }
            }
            i += 1;
        }
        Ok(roles)
    }

    // ---- grants ----

    pub async fn add_grant(&self, g: &Grant) -> StoreResult<()> {
        self.execute_grant(
            "INSERT INTO grants (actor_type, actor_id, target_type, target_id, role_id, inherited) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            g,
        )
        .await?;
        Ok(())
    }

    pub async fn remove_grant(&self, g: &Grant) -> StoreResult<()> {
        let done = self
            .execute_grant(
                "DELETE FROM grants WHERE actor_type = $1 AND actor_id = $2 AND target_type = $3 AND target_id = $4 \
                 AND role_id = $5 AND inherited = $6",
                g,
            )
            .await?;
        found(done, || {
            format!(
                "Could not find role assignment with role: {}, user or group: {}, project, domain, or system: {}.",
                g.role_id, g.actor_id, g.target_id
            )
        })
    }

    /// Runs `sql` with the grant's six columns bound as `$1` to `$6`, in table order; the
    /// number of rows it touched.
    async fn execute_grant(&self, sql: &str, g: &Grant) -> StoreResult<u64> {
        Ok(sqlx::query(sql)
            .bind(&g.actor_type)
            .bind(&g.actor_id)
            .bind(&g.target_type)
            .bind(&g.target_id)
            .bind(&g.role_id)
            .bind(g.inherited)
            .execute(&mut *self.conn().await?)
            .await?
            .rows_affected())
    }

    /// A user's direct grant of a role on a project (bootstrap and tests).
    pub async fn grant(&self, user_id: &str, project_id: &str, role_id: &str) -> StoreResult<()> {
        self.add_grant(&Grant {
            actor_type: "user".into(),
            actor_id: user_id.into(),
            target_type: "project".into(),
            target_id: project_id.into(),
            role_id: role_id.into(),
            inherited: 0,
        })
        .await
    }

    /// Grants matching every given field.
    pub async fn list_grants(
        &self,
        actor: Option<(&str, &str)>,
        target: Option<(&str, &str)>,
        role_id: Option<&str>,
        inherited: Option<bool>,
    ) -> StoreResult<Vec<Grant>> {
        let mut q = Sql::default();
        q.push("SELECT actor_type, actor_id, target_type, target_id, role_id, inherited FROM grants WHERE 1 = 1");
        if let Some((kind, id)) = actor {
            q.push(" AND actor_type = ").text(kind).push(" AND actor_id = ").text(id);
        }
        if let Some((kind, id)) = target {
            q.push(" AND target_type = ").text(kind).push(" AND target_id = ").text(id);
        }
        if let Some(r) = role_id {
            q.push(" AND role_id = ").text(r);
        }
        if let Some(i) = inherited {
            q.push(" AND inherited = ").int(flag(i));
        }
        q.push(" ORDER BY actor_type DESC, actor_id, target_type, target_id, role_id");
        Ok(q.query_as().fetch_all(&mut *self.conn().await?).await?)
    }

    /// The roles a user holds on a scope: direct and through groups, inherited from the
    /// project's domain and ancestors, implied roles expanded; domain-specific roles left out
    /// (they only carry what they imply), as Keystone puts them in tokens.
    pub async fn effective_roles(&self, user_id: &str, scope: &Scope) -> StoreResult<Vec<Role>> {
        let mut q = Sql::default();
        q.push(&format!("SELECT DISTINCT {} FROM roles r JOIN grants g ON g.role_id = r.id WHERE ", ROLE_COLS_R));
        q.push("((g.actor_type = 'user' AND g.actor_id = ")
            .text(user_id)
            .push(") OR (g.actor_type = 'group' AND g.actor_id IN (SELECT group_id FROM group_members WHERE user_id = ")
            .text(user_id)
            .push("))) AND (");
        match scope {
            Scope::Project(pid) => {
                let p = match self.get_project(pid).await {
                    Ok(p) => p,
                    Err(StoreError::NotFound(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                q.push("(g.target_type = 'project' AND g.target_id = ").text(pid).push(" AND g.inherited = 0)");
                q.push(" OR (g.target_type = 'domain' AND g.target_id = ")
                    .text(&p.domain_id)
                    .push(" AND g.inherited = 1)");
                let ancestors = self.project_ancestors(&p).await?;
                if !ancestors.is_empty() {
                    q.push(" OR (g.target_type = 'project' AND g.inherited = 1 AND g.target_id IN (")
                        .texts(ancestors.iter().map(String::as_str))
                        .push("))");
                }
            }
            Scope::Domain(did) => {
                q.push("g.target_type = 'domain' AND g.target_id = ").text(did).push(" AND g.inherited = 0");
            }
            Scope::System => {
                q.push("g.target_type = 'system' AND g.target_id = ").text(SYSTEM_ALL);
            }
        }
        q.push(") ORDER BY r.name");
        let direct: Vec<Role> = q.query_as().fetch_all(&mut *self.conn().await?).await?;
        let mut roles = self.expand_implied(direct).await?;
        roles.retain(|r| r.domain_id.is_none());
        Ok(roles)
    }

    /// Projects on which the user holds any role (directly, through a group, or inherited).
    pub async fn user_projects(&self, user_id: &str) -> StoreResult<Vec<Project>> {
        // Candidates in one query; effective_roles then decides (a domain-specific role alone
        // gives no access, and inherited project grants reach the whole subtree).
        const ACTOR: &str = "((actor_type = 'user' AND actor_id = $1) OR (actor_type = 'group' AND actor_id IN \
                             (SELECT group_id FROM group_members WHERE user_id = $1)))";
        let candidates: Vec<Project> = sqlx::query_as(&format!(
            "SELECT {PROJECT_COLS} FROM projects WHERE \
             id IN (SELECT target_id FROM grants WHERE target_type = 'project' AND {ACTOR}) \
             OR domain_id IN (SELECT target_id FROM grants WHERE target_type = 'domain' AND inherited = 1 AND {ACTOR}) \
             OR (parent_id IS NOT NULL AND EXISTS (SELECT 1 FROM grants WHERE target_type = 'project' \
                 AND inherited = 1 AND {ACTOR})) ORDER BY name"
        ))
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut out = Vec::new();
        for p in candidates {
            if !self.effective_roles(user_id, &Scope::Project(p.id.clone())).await?.is_empty() {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Domains on which the user holds a role (directly or through a group).
    pub async fn user_domains(&self, user_id: &str) -> StoreResult<Vec<Domain>> {
        Ok(sqlx::query_as(
            "SELECT id, name, description, enabled FROM domains WHERE id IN (SELECT target_id FROM grants \
             WHERE target_type = 'domain' AND inherited = 0 AND ((actor_type = 'user' AND actor_id = $1) OR \
             (actor_type = 'group' AND actor_id IN (SELECT group_id FROM group_members WHERE user_id = $1)))) \
             ORDER BY name",
        )
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    // ---- tokens ----

    /// Stores a token under [`token_hash`] of its id.
    pub async fn insert_token(&self, t: &Token) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO tokens ({TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10)"))
            .bind(token_hash(&t.id))
            .bind(&t.user_id)
            .bind(t.project_id.as_deref())
            .bind(&t.methods)
            .bind(&t.audit_id)
            .bind(&t.issued_at)
            .bind(&t.expires_at)
            .bind(t.domain_id.as_deref())
            .bind(t.system_scope)
            .bind(t.app_cred_id.as_deref())
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// The token whose id is `id` (the raw bearer token; looked up by its hash).
    pub async fn get_token(&self, id: &str) -> StoreResult<Token> {
        let hash = token_hash(id);
        let token: Token = self
            .fetch_found(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1"), &[&hash], || {
                "Could not find token.".to_string()
            })
            .await?;
        Ok(Token { id: id.to_string(), ..token })
    }

    /// A token with its user, the user's domain and, if scoped, the project and its domain (or
    /// the scoped domain) — one query for the hot path every authenticated request takes.
    pub async fn token_context(&self, id: &str) -> StoreResult<Option<TokenContext>> {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT t.id, t.user_id, t.project_id, t.methods, t.audit_id, t.issued_at, t.expires_at, t.revoked, \
             u.name, u.domain_id, u.password_hash, u.enabled, u.email, u.description, u.default_project_id, \
             ud.name, ud.description, ud.enabled, \
             p.name, p.domain_id, p.description, p.enabled, p.tags, pd.name, pd.description, pd.enabled, \
             u.extra, p.parent_id, t.domain_id, t.system_scope, t.app_cred_id, sd.name, sd.description, sd.enabled \
             FROM tokens t JOIN users u ON u.id = t.user_id JOIN domains ud ON ud.id = u.domain_id \
             LEFT JOIN projects p ON p.id = t.project_id LEFT JOIN domains pd ON pd.id = p.domain_id \
             LEFT JOIN domains sd ON sd.id = t.domain_id \
             WHERE t.id = $1",
        )
        .bind(token_hash(id))
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let token = Token {
            // The row holds the hash; the caller's token is the id.
            id: id.to_string(),
            user_id: r.try_get(1)?,
            project_id: r.try_get(2)?,
            methods: r.try_get(3)?,
            audit_id: r.try_get(4)?,
            issued_at: r.try_get(5)?,
            expires_at: r.try_get(6)?,
            revoked: r.try_get(7)?,
            domain_id: r.try_get(28)?,
            system_scope: r.try_get(29)?,
            app_cred_id: r.try_get(30)?,
        };
        let user = User {
            id: token.user_id.clone(),
            name: r.try_get(8)?,
            domain_id: r.try_get(9)?,
            password_hash: r.try_get(10)?,
            enabled: r.try_get(11)?,
            email: r.try_get(12)?,
            description: r.try_get(13)?,
            default_project_id: r.try_get(14)?,
            extra: r.try_get(26)?,
        };
        let user_domain = Domain {
            id: user.domain_id.clone(),
            name: r.try_get(15)?,
            description: r.try_get(16)?,
            enabled: r.try_get(17)?,
        };
        let project_name: Option<String> = r.try_get(18)?;
        let project = match (&token.project_id, project_name) {
            (Some(pid), Some(name)) => {
                let domain_id: String = r.try_get(19)?;
                let p = Project {
                    id: pid.clone(),
                    name,
                    domain_id: domain_id.clone(),
                    description: r.try_get(20)?,
                    enabled: r.try_get(21)?,
                    tags: r.try_get(22)?,
                    parent_id: r.try_get(27)?,
                };
                let d = Domain {
                    id: domain_id,
                    name: r.try_get(23)?,
                    description: r.try_get(24)?,
                    enabled: r.try_get(25)?,
                };
                Some((p, d))
            }
            _ => None,
        };
        let domain_name: Option<String> = r.try_get(31)?;
        let domain = match (&token.domain_id, domain_name) {
            (Some(did), Some(name)) => {
                Some(Domain { id: did.clone(), name, description: r.try_get(32)?, enabled: r.try_get(33)? })
            }
            _ => None,
        };
        Ok(Some(TokenContext { token, user, user_domain, project, domain }))
    }

    pub async fn revoke_token(&self, id: &str) -> StoreResult<()> {
        self.execute_keys("UPDATE tokens SET revoked = 1 WHERE id = $1", &[&token_hash(id)]).await?;
        Ok(())
    }

    /// Revokes every token of a user (password change, disable, delete).
    pub async fn revoke_user_tokens(&self, user_id: &str) -> StoreResult<()> {
        self.execute_keys("UPDATE tokens SET revoked = 1 WHERE user_id = $1", &[user_id]).await?;
        Ok(())
    }

    /// Deletes tokens that expired before `cutoff`; returns how many.
    pub async fn purge_tokens(&self, cutoff: &str) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM tokens WHERE expires_at < $1")
            .bind(cutoff)
            .execute(&mut *self.conn().await?)
            .await?
            .rows_affected())
    }
}

/// What the `tokens` table stores for a bearer token: its SHA-256, lowercase hex. Tokens are 256
/// random bits, so an unsalted fast hash is enough to make a leaked table useless.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Maps a unique violation to a Conflict with a friendly message.
pub(crate) fn conflict(err: sqlx::Error, message: String) -> StoreError {
    match StoreError::from(err) {
        StoreError::Conflict(_) => StoreError::Conflict(message),
        other => other,
    }
}

/// NotFound when an UPDATE/DELETE touched no row.
pub(crate) fn found(rows: u64, what: impl FnOnce() -> String) -> StoreResult<()> {
    if rows == 0 { Err(StoreError::NotFound(what())) } else { Ok(()) }
}

impl Store {
    /// The one row `sql` selects with `keys` bound as `$1`, `$2`, …; `NotFound(missing())` when
    /// there is none.
    pub(crate) async fn fetch_found<T>(
        &self,
        sql: &str,
        keys: &[&str],
        missing: impl FnOnce() -> String,
    ) -> StoreResult<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let mut q = sqlx::query_as(sql);
        for k in keys {
            q = q.bind(*k);
        }
        q.fetch_optional(&mut *self.conn().await?).await?.ok_or_else(|| StoreError::NotFound(missing()))
    }

    /// Runs `sql` with `keys` bound as `$1`, `$2`, …; the number of rows it touched.
    pub(crate) async fn execute_keys(&self, sql: &str, keys: &[&str]) -> StoreResult<u64> {
        let mut q = sqlx::query(sql);
        for k in keys {
            q = q.bind(*k);
        }
        Ok(q.execute(&mut *self.conn().await?).await?.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_token_or_password_hash() {
        let user = User {
            id: "u1".into(),
            name: "alice".into(),
            domain_id: "default".into(),
            password_hash: Some("$argon2id$v=19$s3cret".into()),
            enabled: 1,
            email: None,
            description: None,
            default_project_id: None,
            extra: "{}".into(),
        };
        let token = Token {
            id: "tok-s3cret".into(),
            user_id: "u1".into(),
            project_id: None,
            methods: "password".into(),
            audit_id: "audit".into(),
            issued_at: "now".into(),
            expires_at: "later".into(),
            revoked: 0,
            domain_id: None,
            system_scope: 0,
            app_cred_id: None,
        };
        let domain = Domain { id: "default".into(), name: "Default".into(), description: String::new(), enabled: 1 };
        let ctx = TokenContext { token, user, user_domain: domain, project: None, domain: None };
        let text = format!("{ctx:?} {:?} {:?}", ctx.token, ctx.user);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>") && text.contains("alice") && text.contains("audit"), "{text}");
    }
}
