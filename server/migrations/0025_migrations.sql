-- Migrations (issue 17, resize / cold migrate / live migrate / evacuate): Nova's `migrations`
-- table as the API shows it (os-migrations, /servers/{id}/migrations). `id` is the integer the
-- API shows (`id`), `uuid` the 2.59 one. Hosts are kept by name (what the API shows) and by
-- id (who may use the disk relay). `old_flavor` / `new_flavor` are the instance's flavor JSON
-- snapshots before and after. `held_host_id` / `held_flavor`: the second claim the migration
-- holds besides the instance's own (the destination's new flavor until the guest runs there,
-- then the source's old flavor until confirm or revert); NULL when none. `power_on`: whether
-- the guest ran before (1) and runs again where it lands. `disk_bytes`: what the source sent
-- through the relay.
CREATE TABLE migrations (
    id               BIGINT PRIMARY KEY,
    uuid             TEXT NOT NULL UNIQUE,
    instance_uuid    TEXT NOT NULL,
    project_id       TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    migration_type   TEXT NOT NULL,
    status           TEXT NOT NULL,
    source_host_id   TEXT,
    source_compute   TEXT,
    dest_host_id     TEXT,
    dest_compute     TEXT,
    dest_host        TEXT,
    old_flavor_id    TEXT NOT NULL,
    new_flavor_id    TEXT NOT NULL,
    old_flavor       TEXT NOT NULL,
    new_flavor       TEXT NOT NULL,
    held_host_id     TEXT,
    held_flavor      TEXT,
    power_on         BIGINT NOT NULL DEFAULT 1,
    prior_vm_state   TEXT NOT NULL DEFAULT 'active',
    disk_bytes       BIGINT NOT NULL DEFAULT 0,
    memory_total     BIGINT,
    memory_processed BIGINT,
    memory_remaining BIGINT,
    disk_total       BIGINT,
    disk_processed   BIGINT,
    disk_remaining   BIGINT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX migrations_instance ON migrations (instance_uuid, created_at);
CREATE INDEX migrations_updated ON migrations (updated_at, id);
