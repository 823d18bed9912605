-- Block storage (Cinder v3, issue 16): volume types, volumes placed on a host, the transitions of
-- every volume's status, and attachments of volumes to instances.

CREATE TABLE volume_types (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    is_public   BIGINT NOT NULL DEFAULT 1,
    -- JSON object of string → string.
    extra_specs TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE volumes (
    id                TEXT PRIMARY KEY,
    project_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    name              TEXT,
    description       TEXT,
    size              BIGINT NOT NULL,
    -- Cinder's status: creating, available, reserved, attaching, in-use, detaching, extending,
    -- deleting, error, error_deleting, error_extending.
    status            TEXT NOT NULL,
    attach_status     TEXT NOT NULL DEFAULT 'detached',
    volume_type_id    TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    -- The compute host whose agent holds the bytes (NULL until placed).
    host_id           TEXT,
    bootable          BIGINT NOT NULL DEFAULT 0,
    readonly          BIGINT NOT NULL DEFAULT 0,
    metadata          TEXT NOT NULL DEFAULT '{}',
    -- When a transitional status (creating, attaching, detaching, extending, deleting) must have
    -- ended; the conductor's tick moves a volume past it to where Cinder would leave it.
    deadline          TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX volumes_project ON volumes (project_id, created_at, id);
CREATE INDEX volumes_host ON volumes (host_id);
CREATE INDEX volumes_deadline ON volumes (deadline);

-- Every status a volume went through (written with the change, in one transaction).
CREATE TABLE volume_transitions (
    volume_id TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    status    TEXT NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (volume_id, seq)
);

-- One row per attachment (Cinder's volume_attachment). An attachment ends by being deleted.
CREATE TABLE volume_attachments (
    id            TEXT PRIMARY KEY,
    volume_id     TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    instance_id   TEXT,
    host_id       TEXT,
    -- reserved, attaching, attached, detaching
    status        TEXT NOT NULL,
    mountpoint    TEXT,
    attach_mode   TEXT NOT NULL DEFAULT 'rw',
    -- Whether Nova made it (os-volume_attachments): then the agent plugs it into the domain.
    by_compute    BIGINT NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX volume_attachments_volume ON volume_attachments (volume_id);
CREATE INDEX volume_attachments_instance ON volume_attachments (instance_id);

-- Cinder's default type, which every volume created without a type gets.
INSERT INTO volume_types (id, name, description, is_public, extra_specs, created_at, updated_at)
VALUES ('2a1b4bd0-0d54-4b8f-9d0d-6f0d1e7c0a01', '__DEFAULT__', 'Default Volume Type', 1, '{}',
        '2026-12-07T00:00:00.000000Z', '2026-12-07T00:00:00.000000Z');
