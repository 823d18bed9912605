-- Volumes from images and boot from volume (issue 16).

-- Cinder's `volume_glance_metadata`: what a volume made from an image keeps of it (image_id,
-- image_name, checksum, formats, min_disk, min_ram, size and the image's properties), as one
-- JSON object of string → string per volume; `os-set_image_metadata` changes it.
CREATE TABLE volume_image_metadata (
    volume_id TEXT PRIMARY KEY REFERENCES volumes(id) ON DELETE CASCADE,
    metadata  TEXT NOT NULL DEFAULT '{}'
);

-- Nova's `block_device_mapping` for destination_type volume: one row per volume of a server's
-- `block_device_mapping_v2`, in request order (`position`). `volume_id` is NULL until the
-- conductor made the volume (source image or blank); `attachment_id` until it attached it.
CREATE TABLE block_device_mappings (
    instance_id           TEXT NOT NULL,
    position              BIGINT NOT NULL,
    source_type           TEXT NOT NULL,
    -- The image (source image), volume (source volume) or snapshot the mapping names.
    source_id             TEXT,
    volume_id             TEXT,
    volume_size           BIGINT,
    boot_index            BIGINT,
    device_name           TEXT,
    delete_on_termination BIGINT NOT NULL DEFAULT 0,
    attachment_id         TEXT,
    created_at            TEXT NOT NULL,
    PRIMARY KEY (instance_id, position)
);
CREATE INDEX block_device_mappings_volume ON block_device_mappings (volume_id);
