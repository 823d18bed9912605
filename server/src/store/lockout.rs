//! Keystone's account lockout state on `users` (`failed_auth_count`, `failed_auth_at`): what
//! `identity::lockout` reads before a password check and writes after it.

use super::identity::found;
use super::{Store, StoreResult, now};

/// A user's password failures since the last success.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FailedAuth {
    pub failed_auth_count: i64,
    /// RFC 3339 time of the last failure; `None` when there is none.
    pub failed_auth_at: Option<String>,
}

impl Store {
    pub async fn failed_auth(&self, user_id: &str) -> StoreResult<FailedAuth> {
        self.fetch_found("SELECT failed_auth_count, failed_auth_at FROM users WHERE id = $1", &[user_id], || {
            format!("Could not find user: {user_id}.")
        })
        .await
    }

    /// Counts one more failure, now (one statement, so concurrent failures all count).
    pub async fn record_failed_auth(&self, user_id: &str) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE users SET failed_auth_count = failed_auth_count + 1, failed_auth_at = $2 WHERE id = $1",
        )
        .bind(user_id)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        found(done.rows_affected(), || format!("Could not find user: {user_id}."))
    }

    /// Forgets the failures (a successful login, or a lockout that has run out).
    pub async fn reset_failed_auth(&self, user_id: &str) -> StoreResult<()> {
        self.execute_keys("UPDATE users SET failed_auth_count = 0, failed_auth_at = NULL WHERE id = $1", &[user_id])
            .await?;
        Ok(())
    }
}
