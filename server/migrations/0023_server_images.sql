-- Server images (issue 17, slice A): the images createImage, createBackup and shelve make of an
-- instance, and what a shelved instance keeps (Nova's `shelved_at`, `shelved_image_id` and
-- `shelved_host` system metadata).
--
-- `instance_images`: one row per image an instance action is making or made. `kind` is
-- 'snapshot', 'backup' or 'shelve'; `backup_type` and `rotation` are createBackup's (rotation
-- applies once the upload is done); `state` is 'uploading' until the host's answer, then
-- 'done' (or the row is gone with its image on failure).
CREATE TABLE instance_images (
    image_id     TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    backup_type  TEXT,
    rotation     BIGINT,
    state        TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX instance_images_instance ON instance_images (instance_id, state);

-- A shelved instance: when it was shelved, the image its disk went to (NULL for a volume-backed
-- one) and the host it was shelved on. The row goes when the instance is unshelved.
CREATE TABLE instance_shelves (
    instance_id  TEXT PRIMARY KEY,
    image_id     TEXT,
    shelved_at   TEXT NOT NULL,
    shelved_host TEXT
);
