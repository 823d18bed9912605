-- Neutron security groups (issue 15): groups, their rules, and which ports use which groups.
-- Portable SQL (SQLite and PostgreSQL), booleans as 0/1, times as fixed-width RFC 3339 text.

CREATE TABLE security_groups (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL,
    name            TEXT NOT NULL DEFAULT '',
    description     TEXT NOT NULL DEFAULT '',
    is_default      BIGINT NOT NULL DEFAULT 0,
    stateful        BIGINT NOT NULL DEFAULT 1,
    tags            TEXT NOT NULL DEFAULT '[]',
    revision_number BIGINT NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
-- One `default` group per project, however many requests race to create it.
CREATE UNIQUE INDEX security_groups_one_default ON security_groups (project_id) WHERE is_default = 1;
CREATE INDEX security_groups_created ON security_groups (created_at, id);

CREATE TABLE security_group_rules (
    id                TEXT PRIMARY KEY,
    security_group_id TEXT NOT NULL REFERENCES security_groups(id) ON DELETE CASCADE,
    project_id        TEXT NOT NULL,
    direction         TEXT NOT NULL,
    ethertype         TEXT NOT NULL,
    protocol          TEXT,
    port_range_min    BIGINT,
    port_range_max    BIGINT,
    remote_ip_prefix  TEXT,
    -- As Neutron: a rule naming a group as its peer goes with that group.
    remote_group_id   TEXT REFERENCES security_groups(id) ON DELETE CASCADE,
    description       TEXT NOT NULL DEFAULT '',
    revision_number   BIGINT NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX security_group_rules_group ON security_group_rules (security_group_id);
CREATE INDEX security_group_rules_remote ON security_group_rules (remote_group_id);

-- A port's groups. No cascade from the group: a group in use cannot be deleted.
CREATE TABLE port_security_groups (
    port_id           TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
    security_group_id TEXT NOT NULL REFERENCES security_groups(id),
    PRIMARY KEY (port_id, security_group_id)
);
CREATE INDEX port_security_groups_group ON port_security_groups (security_group_id);

-- `ports.security_groups` was free text the API never accepted (so '[]' everywhere). It is no
-- longer read for the port's groups; it now holds only what is left to adopt: ports that had
-- port security on (and are not network-owned) are marked to get their project's default
-- group, which the server creates and binds at start (`Store::adopt_legacy_security_groups`),
-- since ids cannot be generated in portable SQL. Anything else stored there is kept as it was
-- and resolved (group id or name in the port's project) by the same step.
UPDATE ports SET security_groups = '["default"]'
    WHERE security_groups = '[]' AND port_security_enabled = 1 AND device_owner NOT LIKE 'network:%';
