-- More compute API (issue 17, slice F).
-- Quota classes (`os-quota-class-sets`): per class and resource, the limit a project without
-- its own override gets. Only the class `default` is read by the quota code (as Nova's
-- DbQuotaDriver); other names are stored and shown, never applied.
CREATE TABLE quota_classes (
    class_name TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (class_name, resource)
);
-- The guest's encrypted password as it posted it to the metadata service (Nova keeps it in
-- four 255-character `password_N` system metadata chunks; one column here). NULL when none.
ALTER TABLE instances ADD COLUMN password TEXT;
-- The device tag a port was attached with (`os-interface`, 2.49; shown from 2.70), as Nova's
-- VirtualInterface.tag. One row per tagged attached port; gone when the port is detached.
CREATE TABLE interface_tags (
    port_id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    tag TEXT NOT NULL
);
