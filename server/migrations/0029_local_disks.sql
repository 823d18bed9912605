-- A server's own local disks (Nova's `block_device_mapping` rows with source_type blank and
-- destination_type local): ephemeral disks and a swap disk asked for in
-- `block_device_mapping_v2`, which replace the flavor's defaults. `size` is GiB for an
-- ephemeral disk, MiB for swap (as Nova's `volume_size` for each); `position` is the order
-- among the server's local disks (device names follow it).
CREATE TABLE instance_local_disks (
    instance_id  TEXT NOT NULL,
    position     BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    size         BIGINT NOT NULL,
    guest_format TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (instance_id, position)
);
