-- Keystone breadth: groups, role grants on projects/domains/the system (to users or groups,
-- optionally inherited), domain-specific roles, project hierarchy, users' extra attributes,
-- scoped tokens, application credentials with access rules, and a writable catalog.
-- Portable between SQLite and PostgreSQL, like 0001.

ALTER TABLE users ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';

-- NULL: a top-level project (its parent is its domain).
ALTER TABLE projects ADD COLUMN parent_id TEXT REFERENCES projects(id);

-- NULL: a global role; otherwise the domain a domain-specific role belongs to.
ALTER TABLE roles ADD COLUMN domain_id TEXT REFERENCES domains(id) ON DELETE CASCADE;

CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    domain_id   TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    UNIQUE (domain_id, name)
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

-- Every role grant, as Keystone's assignment + system_assignment tables: an actor ('user' |
-- 'group') holds a role on a target ('project' | 'domain' | 'system', whose id is 'all').
-- `inherited` grants apply to the projects below the target, not to the target itself.
-- Actors and targets live in several tables, so their deletes remove grants explicitly.
CREATE TABLE grants (
    actor_type  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    role_id     TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    inherited   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (actor_type, actor_id, target_type, target_id, role_id, inherited)
);
CREATE INDEX grants_target ON grants (target_type, target_id);

INSERT INTO grants (actor_type, actor_id, target_type, target_id, role_id, inherited)
    SELECT 'user', user_id, 'project', project_id, role_id, 0 FROM role_assignments;
DROP TABLE role_assignments;

-- A token's scope: project_id (0001), or a domain, or the system.
ALTER TABLE tokens ADD COLUMN domain_id TEXT REFERENCES domains(id) ON DELETE CASCADE;
ALTER TABLE tokens ADD COLUMN system_scope BIGINT NOT NULL DEFAULT 0;
-- Set when the token came from an application credential (its roles are the credential's).
ALTER TABLE tokens ADD COLUMN app_cred_id TEXT;

CREATE TABLE application_credentials (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id   TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    secret_hash  TEXT NOT NULL,
    expires_at   TEXT,
    unrestricted BIGINT NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    UNIQUE (user_id, name)
);

CREATE TABLE application_credential_roles (
    app_cred_id TEXT NOT NULL REFERENCES application_credentials(id) ON DELETE CASCADE,
    role_id     TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (app_cred_id, role_id)
);

-- Access rules belong to the user and outlive the credentials that use them (as in Keystone).
CREATE TABLE access_rules (
    id      TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    path    TEXT NOT NULL,
    method  TEXT NOT NULL,
    UNIQUE (user_id, service, path, method)
);

CREATE TABLE application_credential_access_rules (
    app_cred_id    TEXT NOT NULL REFERENCES application_credentials(id) ON DELETE CASCADE,
    access_rule_id TEXT NOT NULL REFERENCES access_rules(id) ON DELETE CASCADE,
    PRIMARY KEY (app_cred_id, access_rule_id)
);

ALTER TABLE regions ADD COLUMN parent_region_id TEXT REFERENCES regions(id);

CREATE TABLE services (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    enabled     BIGINT NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL
);

-- `url` may hold Keystone's `$(name)s` substitutions; Meridian's own endpoints use
-- `$(public_url)s`, so the catalog follows the configured public URL.
CREATE TABLE endpoints (
    id         TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    interface  TEXT NOT NULL,
    region_id  TEXT REFERENCES regions(id),
    url        TEXT NOT NULL,
    enabled    BIGINT NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
