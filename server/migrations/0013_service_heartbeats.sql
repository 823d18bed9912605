-- Liveness of each server replica's supervised background loops (issue 13): one row per
-- (replica, service), refreshed while the loop runs. `os-services` reports nova-scheduler and
-- nova-conductor per replica from these rows, down when a row is older than the down threshold.
-- (`service` rather than Nova's `binary`: BINARY is a reserved word in PostgreSQL.)
CREATE TABLE service_heartbeats (
    replica    TEXT NOT NULL,
    service    TEXT NOT NULL,
    -- The service's id from microversion 2.53 on, and its integer id before (negative, so it
    -- never equals a compute host's number).
    id         TEXT NOT NULL UNIQUE,
    num        BIGINT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (replica, service)
);
