//! Keystone's account lockout (`[security_compliance] lockout_failure_attempts` and
//! `lockout_duration`, off by default), as `keystone/identity/backends/sql.py` does it: a
//! locked account is refused before its password is checked, so a locked user costs no hash;
//! each wrong password counts a failure and stamps its time; a right one forgets the failures;
//! a lock ends `lockout_duration` seconds after the last failure (never, when 0) or when an
//! admin updates the enabled user (`Store::update_user`).

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::identity::User;
use crate::store::parse_time;

/// Checks `password` for `user` (through the hashing pool): `Ok(true)` when right, `Ok(false)`
/// when wrong (or the user has no password), Keystone's 401 "The account is locked for user:
/// …" while locked.
pub async fn check_password(state: &AppState, user: &User, password: String) -> ApiResult<bool> {
    let Some(max_attempts) = state.cfg.security_compliance.lockout_failure_attempts else {
        return verify(state, user, password).await;
    };
    let failed = state.store.failed_auth(&user.id).await?;
    let mut failures = failed.failed_auth_count;
    if failures >= i64::from(max_attempts) {
        let duration = state.cfg.security_compliance.lockout_duration;
        let ends = failed
            .failed_auth_at
            .as_deref()
            .and_then(parse_time)
            .map(|at| at + chrono::Duration::seconds(i64::try_from(duration).unwrap_or(i64::MAX)));
        if duration == 0 || ends.is_some_and(|end| end > chrono::Utc::now()) {
            return Err(ApiError::unauthorized(format!("The account is locked for user: {}.", user.id)));
        }
        // The lock has run out: start counting afresh.
        state.store.reset_failed_auth(&user.id).await?;
        failures = 0;
    }
    let ok = verify(state, user, password).await?;
    if !ok {
        state.store.record_failed_auth(&user.id).await?;
    } else if failures > 0 {
        state.store.reset_failed_auth(&user.id).await?;
    }
    Ok(ok)
}

async fn verify(state: &AppState, user: &User, password: String) -> ApiResult<bool> {
    match &user.password_hash {
        Some(hash) => state.limits.hashing.verify(password, hash.clone()).await,
        None => Ok(false),
    }
}
