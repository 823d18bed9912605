-- Per-host agent credentials (issue 13): the join token only registers a host; registration
-- hands the agent a random 256-bit credential for that host alone, stored here as its SHA-256
-- (lowercase hex, as `tokens.id`), replaced by every registration. Hosts registered before this
-- migration have none: their agents' next call is refused and they register again.
ALTER TABLE hosts ADD COLUMN credential_hash TEXT;
CREATE UNIQUE INDEX hosts_credential_hash ON hosts (credential_hash);
