-- Volumes with content (issue 16): snapshots of volumes, kept beside their volume on its host,
-- and where a volume's first bytes came from.

CREATE TABLE volume_snapshots (
    id          TEXT PRIMARY KEY,
    volume_id   TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    project_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    name        TEXT,
    description TEXT,
    -- The volume's size when the snapshot was taken (GiB).
    size        BIGINT NOT NULL,
    -- Cinder's status: creating, available, deleting, error, error_deleting.
    status      TEXT NOT NULL,
    -- Cinder's `os-extended-snapshot-attributes:progress` ("0%" … "100%").
    progress    TEXT NOT NULL DEFAULT '0%',
    metadata    TEXT NOT NULL DEFAULT '{}',
    -- When a transitional status (creating, deleting) must have ended.
    deadline    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX volume_snapshots_project ON volume_snapshots (project_id, created_at, id);
CREATE INDEX volume_snapshots_volume ON volume_snapshots (volume_id);
CREATE INDEX volume_snapshots_deadline ON volume_snapshots (deadline);

-- Every status a snapshot went through (written with the change, in one transaction).
CREATE TABLE volume_snapshot_transitions (
    snapshot_id TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    status      TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, seq)
);

-- A volume made from a snapshot or from another volume names it (Cinder's `snapshot_id`,
-- `source_volid`); the source may be gone since.
ALTER TABLE volumes ADD COLUMN snapshot_id TEXT;
ALTER TABLE volumes ADD COLUMN source_volid TEXT;
