//! Keystone's tables: domains, projects, users, roles, assignments and tokens.

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
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub password_hash: Option<String>,
    pub enabled: i64,
    pub email: Option<String>,
    pub description: Option<String>,
    pub default_project_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Assignment {
    pub user_id: String,
    pub project_id: String,
    pub role_id: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Token {
    pub id: String,
    pub user_id: String,
    pub project_id: Option<String>,
    pub methods: String,
    pub audit_id: String,
    pub issued_at: String,
    pub expires_at: String,
    pub revoked: i64,
}

/// What a token id resolves to (see [`Store::token_context`]).
#[derive(Debug, Clone)]
pub struct TokenContext {
    pub token: Token,
    pub user: User,
    pub user_domain: Domain,
    /// `None` for unscoped tokens, and for scoped ones whose project is gone.
    pub project: Option<(Project, Domain)>,
}

/// Filters for project and user listings.
#[derive(Debug, Default, Clone)]
pub struct NameFilter {
    pub domain_id: Option<String>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
}

const PROJECT_COLS: &str = "id, name, domain_id, description, enabled, tags";
const USER_COLS: &str = "id, name, domain_id, password_hash, enabled, email, description, default_project_id";

impl Store {
    // ---- domains ----

    pub async fn create_domain(&self, id: &str, name: &str, description: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO domains (id, name, description, enabled, created_at) VALUES ($1, $2, $3, 1, $4)")
            .bind(id)
            .bind(name)
            .bind(description)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate entry: domain {name} already exists.")))?;
        Ok(())
    }

    pub async fn get_domain(&self, id: &str) -> StoreResult<Domain> {
        sqlx::query_as("SELECT id, name, description, enabled FROM domains WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Could not find domain: {id}.")))
    }

    pub async fn get_domain_by_name(&self, name: &str) -> StoreResult<Domain> {
        sqlx::query_as("SELECT id, name, description, enabled FROM domains WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Could not find domain: {name}.")))
    }

    pub async fn list_domains(&self) -> StoreResult<Vec<Domain>> {
        Ok(sqlx::query_as("SELECT id, name, description, enabled FROM domains ORDER BY name")
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    // ---- projects ----

    pub async fn create_project(&self, p: &Project) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO projects (id, name, domain_id, description, enabled, tags, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.domain_id)
        .bind(&p.description)
        .bind(p.enabled)
        .bind(&p.tags)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| {
            conflict(e, format!("Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain : {}.", p.name))
        })?;
        Ok(())
    }

    pub async fn get_project(&self, id: &str) -> StoreResult<Project> {
        sqlx::query_as(&format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Could not find project: {id}.")))
    }

    pub async fn get_project_by_name(&self, domain_id: &str, name: &str) -> StoreResult<Project> {
        sqlx::query_as(&format!("SELECT {PROJECT_COLS} FROM projects WHERE domain_id = $1 AND name = $2"))
            .bind(domain_id)
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Could not find project: {name}.")))
    }

    pub async fn list_projects(&self, f: &NameFilter) -> StoreResult<Vec<Project>> {
        let rows: Vec<Project> = sqlx::query_as(&format!(
            "SELECT {PROJECT_COLS} FROM projects \
             WHERE ($1 IS NULL OR domain_id = $1) AND ($2 IS NULL OR name = $2) \
             AND ($3 IS NULL OR enabled = $3) ORDER BY name"
        ))
        .bind(f.domain_id.as_deref())
        .bind(f.name.as_deref())
        .bind(f.enabled.map(flag))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows)
    }

    pub async fn update_project(&self, p: &Project) -> StoreResult<()> {
        let done =
            sqlx::query("UPDATE projects SET name = $2, description = $3, enabled = $4, tags = $5 WHERE id = $1")
                .bind(&p.id)
                .bind(&p.name)
                .bind(&p.description)
                .bind(p.enabled)
                .bind(&p.tags)
                .execute(&mut *self.conn().await?)
                .await
                .map_err(|e| {
                    conflict(e, format!("Duplicate entry: project {} already exists in this domain.", p.name))
                })?;
        found(done.rows_affected(), || format!("Could not find project: {}.", p.id))
    }

    pub async fn delete_project(&self, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM projects WHERE id = $1").bind(id).execute(&mut *self.conn().await?).await?;
        found(done.rows_affected(), || format!("Could not find project: {id}."))
    }

    // ---- users ----

    pub async fn create_user(&self, u: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, name, domain_id, password_hash, enabled, email, description, \
             default_project_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&u.id)
        .bind(&u.name)
        .bind(&u.domain_id)
        .bind(u.password_hash.as_deref())
        .bind(u.enabled)
        .bind(u.email.as_deref())
        .bind(u.description.as_deref())
        .bind(u.default_project_id.as_deref())
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
        sqlx::query_as(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Could not find user: {id}.")))
    }

    pub async fn get_user_by_name(&self, domain_id: &str, name: &str) -> StoreResult<User> {
        sqlx::query_as(&format!("SELECT {USER_COLS} FROM users WHERE domain_id = $1 AND name = $2"))
            .bind(domain_id)
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Could not find user: {name}.")))
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

    pub async fn update_user(&self, u: &User) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE users SET name = $2, password_hash = $3, enabled = $4, email = $5, \
             description = $6, default_project_id = $7 WHERE id = $1",
        )
        .bind(&u.id)
        .bind(&u.name)
        .bind(u.password_hash.as_deref())
        .bind(u.enabled)
        .bind(u.email.as_deref())
        .bind(u.description.as_deref())
        .bind(u.default_project_id.as_deref())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| conflict(e, format!("Duplicate entry: user {} already exists in this domain.", u.name)))?;
        found(done.rows_affected(), || format!("Could not find user: {}.", u.id))
    }

    pub async fn delete_user(&self, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *self.conn().await?).await?;
        found(done.rows_affected(), || format!("Could not find user: {id}."))
    }

    // ---- roles ----

    pub async fn create_role(&self, id: &str, name: &str, description: Option<&str>) -> StoreResult<()> {
        sqlx::query("INSERT INTO roles (id, name, description, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(name)
            .bind(description)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate entry: role {name} already exists.")))?;
        Ok(())
    }

    pub async fn get_role(&self, id: &str) -> StoreResult<Role> {
        sqlx::query_as("SELECT id, name, description FROM roles WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Could not find role: {id}.")))
    }

    pub async fn get_role_by_name(&self, name: &str) -> StoreResult<Role> {
        sqlx::query_as("SELECT id, name, description FROM roles WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Could not find role: {name}.")))
    }

    pub async fn list_roles(&self, name: Option<&str>) -> StoreResult<Vec<Role>> {
        Ok(sqlx::query_as("SELECT id, name, description FROM roles WHERE ($1 IS NULL OR name = $1) ORDER BY name")
            .bind(name)
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
        let done = sqlx::query("DELETE FROM roles WHERE id = $1").bind(id).execute(&mut *self.conn().await?).await?;
        found(done.rows_affected(), || format!("Could not find role: {id}."))
    }

    pub async fn add_implied_role(&self, prior: &str, implied: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO implied_roles (prior_role_id, implied_role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(prior)
        .bind(implied)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    // ---- assignments ----

    pub async fn grant(&self, user_id: &str, project_id: &str, role_id: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO role_assignments (user_id, project_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(project_id)
        .bind(role_id)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    pub async fn revoke(&self, user_id: &str, project_id: &str, role_id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM role_assignments WHERE user_id = $1 AND project_id = $2 AND role_id = $3")
            .bind(user_id)
            .bind(project_id)
            .bind(role_id)
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || {
            format!(
                "Could not find role assignment with role: {role_id}, user or group: {user_id}, project, domain, or system: {project_id}."
            )
        })
    }

    pub async fn list_assignments(
        &self,
        user_id: Option<&str>,
        project_id: Option<&str>,
        role_id: Option<&str>,
    ) -> StoreResult<Vec<Assignment>> {
        Ok(sqlx::query_as(
            "SELECT user_id, project_id, role_id FROM role_assignments WHERE ($1 IS NULL OR user_id = $1) \
             AND ($2 IS NULL OR project_id = $2) AND ($3 IS NULL OR role_id = $3) \
             ORDER BY user_id, project_id, role_id",
        )
        .bind(user_id)
        .bind(project_id)
        .bind(role_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Roles the user holds on the project, with implied roles expanded (admin ⇒ member ⇒ reader).
    pub async fn effective_roles(&self, user_id: &str, project_id: &str) -> StoreResult<Vec<Role>> {
        let direct: Vec<Role> = sqlx::query_as(
            "SELECT r.id, r.name, r.description FROM roles r JOIN role_assignments a ON a.role_id = r.id \
             WHERE a.user_id = $1 AND a.project_id = $2 ORDER BY r.name",
        )
        .bind(user_id)
        .bind(project_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        if direct.is_empty() {
            return Ok(direct);
        }
        let implications: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT i.prior_role_id, r.id, r.name, r.description FROM implied_roles i \
             JOIN roles r ON r.id = i.implied_role_id",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut roles = direct;
        let mut i = 0;
        while i < roles.len() {
            let prior = roles[i].id.clone();
            for (p, id, name, description) in &implications {
                if *p == prior && !roles.iter().any(|r| r.id == *id) {
                    roles.push(Role { id: id.clone(), name: name.clone(), description: description.clone() });
                }
            }
            i += 1;
        }
        Ok(roles)
    }

    /// Projects on which the user holds any role.
    pub async fn user_projects(&self, user_id: &str) -> StoreResult<Vec<Project>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PROJECT_COLS} FROM projects WHERE id IN \
             (SELECT project_id FROM role_assignments WHERE user_id = $1) ORDER BY name"
        ))
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    // ---- tokens ----

    pub async fn insert_token(&self, t: &Token) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tokens (id, user_id, project_id, methods, audit_id, issued_at, expires_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(t.project_id.as_deref())
        .bind(&t.methods)
        .bind(&t.audit_id)
        .bind(&t.issued_at)
        .bind(&t.expires_at)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    pub async fn get_token(&self, id: &str) -> StoreResult<Token> {
        sqlx::query_as(
            "SELECT id, user_id, project_id, methods, audit_id, issued_at, expires_at, revoked FROM tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *self.conn().await?)
        .await?
        .ok_or_else(|| StoreError::NotFound("Could not find token.".into()))
    }

    /// A token with its user, the user's domain and, if scoped, the project and its domain —
    /// one query for the hot path every authenticated request takes.
    pub async fn token_context(&self, id: &str) -> StoreResult<Option<TokenContext>> {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT t.id, t.user_id, t.project_id, t.methods, t.audit_id, t.issued_at, t.expires_at, t.revoked, \
             u.name, u.domain_id, u.password_hash, u.enabled, u.email, u.description, u.default_project_id, \
             ud.name, ud.description, ud.enabled, \
             p.name, p.domain_id, p.description, p.enabled, p.tags, pd.name, pd.description, pd.enabled \
             FROM tokens t JOIN users u ON u.id = t.user_id JOIN domains ud ON ud.id = u.domain_id \
             LEFT JOIN projects p ON p.id = t.project_id LEFT JOIN domains pd ON pd.id = p.domain_id \
             WHERE t.id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let token = Token {
            id: r.try_get(0)?,
            user_id: r.try_get(1)?,
            project_id: r.try_get(2)?,
            methods: r.try_get(3)?,
            audit_id: r.try_get(4)?,
            issued_at: r.try_get(5)?,
            expires_at: r.try_get(6)?,
            revoked: r.try_get(7)?,
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
        Ok(Some(TokenContext { token, user, user_domain, project }))
    }

    pub async fn revoke_token(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = $1").bind(id).execute(&mut *self.conn().await?).await?;
        Ok(())
    }

    /// Revokes every token of a user (password change, disable, delete).
    pub async fn revoke_user_tokens(&self, user_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *self.conn().await?)
            .await?;
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

    // ---- regions ----

    pub async fn ensure_region(&self, id: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO regions (id, description) VALUES ($1, '') ON CONFLICT DO NOTHING")
            .bind(id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn list_regions(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as("SELECT id, description FROM regions ORDER BY id")
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }
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
