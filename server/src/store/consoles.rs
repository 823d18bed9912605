//! Remote console tokens: issued with a console URL, consumed once by the websocket proxy,
//! kept only as their SHA-256.

use super::{Store, StoreResult, fmt_time, now};

/// What a console token grants: one console of one instance on one host.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsoleToken {
    pub instance_id: String,
    pub host_id: String,
    /// `serial` or `novnc`.
    pub console_type: String,
    pub created_at: String,
    pub expires_at: String,
}

impl Store {
    /// Stores a new token (by its hash) that expires `ttl` from now.
    pub async fn create_console_token(
        &self,
        token_hash: &str,
        instance_id: &str,
        host_id: &str,
        console_type: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<()> {
        let created = chrono::Utc::now();
        let expires = created + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        sqlx::query(
            "INSERT INTO console_auth_tokens (token_hash, instance_id, host_id, console_type, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(instance_id)
        .bind(host_id)
        .bind(console_type)
        .bind(fmt_time(created))
        .bind(fmt_time(expires))
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Takes a token out of the store (a token works once), whether or not it has expired:
    /// the caller decides what an expired one means. `None`: unknown or already used.
    pub async fn take_console_token(&self, token_hash: &str) -> StoreResult<Option<ConsoleToken>> {
        Ok(sqlx::query_as(
            "DELETE FROM console_auth_tokens WHERE token_hash = $1 \
             RETURNING instance_id, host_id, console_type, created_at, expires_at",
        )
        .bind(token_hash)
        .fetch_optional(&mut *self.conn().await?)
        .await?)
    }

    /// A token that is still unused and unexpired, without consuming it (the admin API).
    pub async fn get_console_token(&self, token_hash: &str) -> StoreResult<Option<ConsoleToken>> {
        Ok(sqlx::query_as(
            "SELECT instance_id, host_id, console_type, created_at, expires_at FROM console_auth_tokens \
             WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now())
        .fetch_optional(&mut *self.conn().await?)
        .await?)
    }

    /// One retention batch: up to `limit` console tokens that expired before `before`.
    pub async fn purge_expired_console_tokens(&self, before: &str, limit: u32) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM console_auth_tokens WHERE token_hash IN \
             (SELECT token_hash FROM console_auth_tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&mut *self.conn().await?)
        .await?
        .rows_affected())
    }
}
