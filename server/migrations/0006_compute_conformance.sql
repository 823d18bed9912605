-- Compute conformance (issue 12): the servers' access addresses, hosts' uptime as their agents
-- report it, and per-user quota overrides.

-- `accessIPv4` / `accessIPv6`: addresses the user sets for the server (Nova stores them as given).
ALTER TABLE instances ADD COLUMN access_ip_v4 TEXT;
ALTER TABLE instances ADD COLUMN access_ip_v6 TEXT;

-- The host's `uptime` line from its last heartbeat (os-hypervisors/{id}/uptime).
ALTER TABLE hosts ADD COLUMN uptime TEXT;

-- Per-user overrides of a project's compute quotas (`os-quota-sets/{project}?user_id=`).
CREATE TABLE user_quotas (
    project_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id, resource)
);
