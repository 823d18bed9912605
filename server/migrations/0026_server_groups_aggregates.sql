-- Server groups, scheduler hints, aggregates and availability zones (issue 17, slice E).
--
-- server_groups: Nova's InstanceGroup. `policy` is one of affinity, anti-affinity,
-- soft-affinity, soft-anti-affinity; `rules` a JSON object ({"max_server_per_host": N} for
-- anti-affinity only). Members are instances; a deleted instance stops being shown and counted.
CREATE TABLE server_groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    rules TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE INDEX server_groups_project ON server_groups (project_id);

CREATE TABLE server_group_members (
    group_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (group_id, instance_id)
);
CREATE INDEX server_group_members_instance ON server_group_members (instance_id);

-- The scheduler hints an instance was booted with (Nova's RequestSpec.scheduler_hints), as a
-- JSON object of lists: every later scheduling of the instance applies them again.
CREATE TABLE request_specs (
    instance_id TEXT PRIMARY KEY,
    scheduler_hints TEXT NOT NULL DEFAULT '{}'
);

-- Host aggregates: integer ids as Nova's, a uuid (2.41), hosts by name, metadata key/value.
CREATE TABLE aggregates (
    id BIGINT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT
);

CREATE TABLE aggregate_hosts (
    aggregate_id BIGINT NOT NULL,
    host TEXT NOT NULL,
    PRIMARY KEY (aggregate_id, host)
);
CREATE INDEX aggregate_hosts_host ON aggregate_hosts (host);

CREATE TABLE aggregate_metadata (
    aggregate_id BIGINT NOT NULL,
    meta_key TEXT NOT NULL,
    meta_value TEXT NOT NULL,
    PRIMARY KEY (aggregate_id, meta_key)
);

-- The zone an agent reports for itself; hosts.availability_zone is what the scheduler and the
-- API use: the zone of the host's aggregates if any says one, else this.
ALTER TABLE hosts ADD COLUMN reported_availability_zone TEXT;
