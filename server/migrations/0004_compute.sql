-- Compute: hosts (agents) with their inventory and claims, instances, their action log and
-- state timeline, and the durable work queue between the server and the agents.

CREATE TABLE hosts (
    id                 TEXT PRIMARY KEY,
    -- Integer id for microversions before 2.53 (hypervisors and services).
    num                BIGINT NOT NULL UNIQUE,
    name               TEXT NOT NULL UNIQUE,
    enabled            BIGINT NOT NULL DEFAULT 1,
    disabled_reason    TEXT,
    forced_down        BIGINT NOT NULL DEFAULT 0,
    availability_zone  TEXT NOT NULL DEFAULT 'nova',
    hypervisor_type    TEXT NOT NULL,
    hypervisor_version BIGINT NOT NULL DEFAULT 0,
    cpu_arch           TEXT NOT NULL,
    libvirt_uri        TEXT NOT NULL,
    host_ip            TEXT NOT NULL,
    supports_networks  BIGINT NOT NULL DEFAULT 0,
    agent_version      TEXT NOT NULL DEFAULT '',
    vcpus              BIGINT NOT NULL,
    memory_mb          BIGINT NOT NULL,
    disk_gb            BIGINT NOT NULL,
    reserved_vcpus     BIGINT NOT NULL DEFAULT 0,
    reserved_memory_mb BIGINT NOT NULL DEFAULT 0,
    reserved_disk_gb   BIGINT NOT NULL DEFAULT 0,
    -- What instances placed here have claimed.
    vcpus_used         BIGINT NOT NULL DEFAULT 0,
    memory_mb_used     BIGINT NOT NULL DEFAULT 0,
    disk_gb_used       BIGINT NOT NULL DEFAULT 0,
    last_heartbeat     TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);

CREATE TABLE instances (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    hostname          TEXT NOT NULL,
    description       TEXT,
    project_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    -- The flavor as it was at boot (Nova embeds it from 2.47; it may be deleted later).
    flavor_id         TEXT NOT NULL,
    flavor            TEXT NOT NULL,
    -- From the flavor, for quota usage sums.
    vcpus             BIGINT NOT NULL DEFAULT 0,
    memory_mb         BIGINT NOT NULL DEFAULT 0,
    image_id          TEXT NOT NULL,
    key_name          TEXT,
    key_data          TEXT,
    user_data         TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    tags              TEXT NOT NULL DEFAULT '[]',
    availability_zone TEXT,
    config_drive      TEXT NOT NULL DEFAULT '',
    reservation_id    TEXT NOT NULL,
    launch_index      BIGINT NOT NULL DEFAULT 0,
    host_id           TEXT REFERENCES hosts(id),
    -- Hosts still to try if the current one fails (JSON list of host ids), and tried ones.
    alternates        TEXT NOT NULL DEFAULT '[]',
    tried_hosts       TEXT NOT NULL DEFAULT '[]',
    -- Whether the host's resources are currently claimed for this instance.
    claimed           BIGINT NOT NULL DEFAULT 0,
    -- The networks request as given at boot (JSON), and ports this server created for it
    -- (deleted with the instance; ports the user passed in are only detached).
    requested_networks TEXT NOT NULL DEFAULT '[]',
    owned_ports       TEXT NOT NULL DEFAULT '[]',
    vm_state          TEXT NOT NULL,
    task_state        TEXT,
    power_state       BIGINT NOT NULL DEFAULT 0,
    fault             TEXT,
    locked            BIGINT NOT NULL DEFAULT 0,
    build_deadline    TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    launched_at       TEXT,
    terminated_at     TEXT,
    deleted           BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX instances_project ON instances (project_id, deleted);
CREATE INDEX instances_updated ON instances (updated_at);
CREATE INDEX instances_host ON instances (host_id);

-- Every vm_state/task_state/power_state change, with its time (instance actions, TUI timeline).
-- seq counts per instance; writers of one instance are serialised by its row's update.
CREATE TABLE instance_transitions (
    instance_id TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    vm_state    TEXT NOT NULL,
    task_state  TEXT,
    power_state BIGINT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE instance_actions (
    id          TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    action      TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    message     TEXT,
    start_time  TEXT NOT NULL,
    finish_time TEXT,
    updated_at  TEXT NOT NULL
);
CREATE INDEX instance_actions_instance ON instance_actions (instance_id, start_time);

CREATE TABLE instance_action_events (
    id          TEXT PRIMARY KEY,
    action_id   TEXT NOT NULL REFERENCES instance_actions(id) ON DELETE CASCADE,
    event       TEXT NOT NULL,
    host        TEXT,
    result      TEXT,
    traceback   TEXT,
    start_time  TEXT NOT NULL,
    finish_time TEXT
);
CREATE INDEX instance_action_events_action ON instance_action_events (action_id);

-- Work for agents: stored before it is offered, offered until acknowledged.
CREATE TABLE work (
    id           TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    host_id      TEXT NOT NULL,
    action       TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempt      BIGINT NOT NULL DEFAULT 0,
    leased_until TEXT,
    result       TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX work_host_state ON work (host_id, state);
CREATE INDEX work_instance ON work (instance_id);
