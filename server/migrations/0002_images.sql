-- Glance: images, their tags and their members.
-- Same conventions as 0001: TEXT ids, BIGINT integers (0/1 for booleans), JSON as TEXT,
-- fixed-width RFC 3339 UTC timestamps. The image data itself lives on disk
-- ({data_dir}/images/{id}); only its metadata is here.

CREATE TABLE images (
    id               TEXT PRIMARY KEY,
    name             TEXT,
    status           TEXT NOT NULL,
    visibility       TEXT NOT NULL,
    protected        BIGINT NOT NULL DEFAULT 0,
    os_hidden        BIGINT NOT NULL DEFAULT 0,
    checksum         TEXT,
    os_hash_algo     TEXT,
    os_hash_value    TEXT,
    owner            TEXT,
    size             BIGINT,
    virtual_size     BIGINT,
    min_ram          BIGINT NOT NULL DEFAULT 0,
    min_disk         BIGINT NOT NULL DEFAULT 0,
    disk_format      TEXT,
    container_format TEXT,
    -- Free-form properties: a JSON object of string values.
    properties       TEXT NOT NULL DEFAULT '{}',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX images_owner ON images (owner);
CREATE INDEX images_visibility ON images (visibility);

CREATE TABLE image_tags (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (image_id, tag)
);

-- Projects an image is shared with; status is pending, accepted or rejected.
CREATE TABLE image_members (
    image_id   TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    member     TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'pending',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (image_id, member)
);
CREATE INDEX image_members_member ON image_members (member);
