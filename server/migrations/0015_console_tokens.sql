-- Remote console tokens (issue 14): the token in a console URL, stored as its SHA-256 (lowercase
-- hex, as `tokens.id`), never the token itself. A token works once (the websocket proxy deletes
-- the row as it validates it); rows left unused are purged by retention once expired.
CREATE TABLE console_auth_tokens (
    token_hash   TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    host_id      TEXT NOT NULL,
    console_type TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX console_auth_tokens_expires ON console_auth_tokens (expires_at);
