-- Tokens stored as a hash (issue 13): `tokens.id` now holds the SHA-256 (lowercase hex) of the
-- bearer token, never the token itself. Rows written before this migration hold raw tokens;
-- SQLite has no portable SHA-256 to convert them, so they are dropped: every token issued
-- before the upgrade stops working and users (and services) log in again.
DELETE FROM tokens;
