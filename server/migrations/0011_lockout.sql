-- Keystone's account lockout state (issue 13), as its local_user table keeps it: password
-- failures since the last success and when the last one happened (RFC 3339 text, NULL when
-- none). Read and written only while `[security_compliance] lockout_failure_attempts` is set.
ALTER TABLE users ADD COLUMN failed_auth_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN failed_auth_at TEXT;
