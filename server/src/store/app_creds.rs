//! Keystone's application credentials and the access rules they carry.

use super::identity::{Role, conflict, found};
use super::{Store, StoreResult, now};

/// `Debug` redacts `secret_hash`.
#[derive(Clone, sqlx::FromRow)]
pub struct AppCred {
    pub id: String,
    pub user_id: String,
    pub project_id: String,
    pub name: String,
    pub description: Option<String>,
    /// argon2id of the secret; the secret itself is shown once, at creation.
    pub secret_hash: String,
    pub expires_at: Option<String>,
    pub unrestricted: i64,
}

impl std::fmt::Debug for AppCred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCred")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("project_id", &self.project_id)
            .field("name", &self.name)
            .field("description", &self.description)
            .field("secret_hash", &super::identity::REDACTED)
            .field("expires_at", &self.expires_at)
            .field("unrestricted", &self.unrestricted)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccessRule {
    pub id: String,
    pub service: String,
    pub path: String,
    pub method: String,
}

const COLS: &str = "id, user_id, project_id, name, description, secret_hash, expires_at, unrestricted";

impl Store {
    /// Stores a credential with its roles and access rules in one transaction. A rule equal
    /// to one the user already has is shared (Keystone keeps one rule per user and content).
    pub async fn create_app_cred(&self, c: &AppCred, role_ids: &[String], rules: &[AccessRule]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO application_credentials ({COLS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(&c.project_id)
        .bind(&c.name)
        .bind(c.description.as_deref())
        .bind(&c.secret_hash)
        .bind(c.expires_at.as_deref())
        .bind(c.unrestricted)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("Duplicate entry: application credential {} already exists.", c.name)))?;
        for r in role_ids {
            sqlx::query("INSERT INTO application_credential_roles (app_cred_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&c.id)
                .bind(r)
                .execute(&mut *tx)
                .await?;
        }
        for rule in rules {
            // Store the rule for the user (unless an equal one is there), then link the
            // credential to the user's rule of that content: both bind the same rule key.
            let steps = [
                (
                    "INSERT INTO access_rules (id, user_id, service, path, method) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT DO NOTHING",
                    &rule.id,
                ),
                (
                    "INSERT INTO application_credential_access_rules (app_cred_id, access_rule_id) \
                     SELECT $1, id FROM access_rules WHERE user_id = $2 AND service = $3 AND path = $4 AND method = $5 \
                     ON CONFLICT DO NOTHING",
                    &c.id,
                ),
            ];
            for (sql, first) in steps {
                sqlx::query(sql)
                    .bind(first)
                    .bind(&c.user_id)
                    .bind(&rule.service)
                    .bind(&rule.path)
                    .bind(&rule.method)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_app_cred(&self, id: &str) -> StoreResult<AppCred> {
        self.fetch_found(&format!("SELECT {COLS} FROM application_credentials WHERE id = $1"), &[id], || {
            format!("Could not find Application Credential: {id}.")
        })
        .await
    }

    pub async fn get_app_cred_by_name(&self, user_id: &str, name: &str) -> StoreResult<AppCred> {
        self.fetch_found(
            &format!("SELECT {COLS} FROM application_credentials WHERE user_id = $1 AND name = $2"),
            &[user_id, name],
            || format!("Could not find Application Credential: {name}."),
        )
        .await
    }

    pub async fn list_app_creds(&self, user_id: &str, name: Option<&str>) -> StoreResult<Vec<AppCred>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLS} FROM application_credentials WHERE user_id = $1 AND ($2 IS NULL OR name = $2) ORDER BY name"
        ))
        .bind(user_id)
        .bind(name)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn delete_app_cred(&self, user_id: &str, id: &str) -> StoreResult<()> {
        let done = self
            .execute_keys("DELETE FROM application_credentials WHERE id = $1 AND user_id = $2", &[id, user_id])
            .await?;
        found(done, || format!("Could not find Application Credential: {id}."))
    }

    /// The roles delegated to a credential.
    pub async fn app_cred_roles(&self, id: &str) -> StoreResult<Vec<Role>> {
        Ok(sqlx::query_as(
            "SELECT r.id, r.name, r.description, r.domain_id FROM roles r \
             JOIN application_credential_roles a ON a.role_id = r.id WHERE a.app_cred_id = $1 ORDER BY r.name",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn app_cred_access_rules(&self, id: &str) -> StoreResult<Vec<AccessRule>> {
        Ok(sqlx::query_as(
            "SELECT r.id, r.service, r.path, r.method FROM access_rules r \
             JOIN application_credential_access_rules a ON a.access_rule_id = r.id WHERE a.app_cred_id = $1 \
             ORDER BY r.service, r.path, r.method",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn list_access_rules(&self, user_id: &str) -> StoreResult<Vec<AccessRule>> {
        Ok(sqlx::query_as(
            "SELECT id, service, path, method FROM access_rules WHERE user_id = $1 ORDER BY service, path, method",
        )
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn get_access_rule(&self, user_id: &str, id: &str) -> StoreResult<AccessRule> {
        self.fetch_found(
            "SELECT id, service, path, method FROM access_rules WHERE user_id = $1 AND id = $2",
            &[user_id, id],
            || format!("Could not find Access Rule: {id}."),
        )
        .await
    }

    /// Whether any credential still uses the rule (Keystone refuses to delete it then).
    pub async fn access_rule_in_use(&self, id: &str) -> StoreResult<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM application_credential_access_rules WHERE access_rule_id = $1")
                .bind(id)
                .fetch_one(&mut *self.conn().await?)
                .await?;
        Ok(n > 0)
    }

    pub async fn delete_access_rule(&self, user_id: &str, id: &str) -> StoreResult<()> {
        let done = self.execute_keys("DELETE FROM access_rules WHERE user_id = $1 AND id = $2", &[user_id, id]).await?;
        found(done, || format!("Could not find Access Rule: {id}."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret_hash() {
        let c = AppCred {
            id: "c1".into(),
            user_id: "u1".into(),
            project_id: "p1".into(),
            name: "ci".into(),
            description: None,
            secret_hash: "$argon2id$v=19$s3cret".into(),
            expires_at: None,
            unrestricted: 0,
        };
        let text = format!("{c:?}");
        assert!(!text.contains("s3cret") && text.contains("<redacted>") && text.contains("ci"), "{text}");
    }
}
