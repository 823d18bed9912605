-- Neutron: networks, subnets, ports and the IP allocations behind them.
-- Same conventions as 0001: TEXT ids, BIGINT integers (0/1 for booleans), JSON documents as
-- TEXT, fixed-width RFC 3339 UTC timestamps.

CREATE TABLE networks (
    id                      TEXT PRIMARY KEY,
    project_id              TEXT NOT NULL,
    name                    TEXT NOT NULL DEFAULT '',
    description             TEXT NOT NULL DEFAULT '',
    admin_state_up          BIGINT NOT NULL DEFAULT 1,
    status                  TEXT NOT NULL DEFAULT 'ACTIVE',
    shared                  BIGINT NOT NULL DEFAULT 0,
    external                BIGINT NOT NULL DEFAULT 0,
    is_default              BIGINT NOT NULL DEFAULT 0,
    mtu                     BIGINT NOT NULL DEFAULT 1500,
    port_security_enabled   BIGINT NOT NULL DEFAULT 1,
    availability_zone_hints TEXT NOT NULL DEFAULT '[]',
    tags                    TEXT NOT NULL DEFAULT '[]',
    revision_number         BIGINT NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
CREATE INDEX networks_project ON networks (project_id);

CREATE TABLE subnets (
    id                TEXT PRIMARY KEY,
    network_id        TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    project_id        TEXT NOT NULL,
    name              TEXT NOT NULL DEFAULT '',
    description       TEXT NOT NULL DEFAULT '',
    ip_version        BIGINT NOT NULL,
    cidr              TEXT NOT NULL,
    gateway_ip        TEXT,
    -- [{"start": "10.0.0.2", "end": "10.0.0.254"}, ...]
    allocation_pools  TEXT NOT NULL DEFAULT '[]',
    dns_nameservers   TEXT NOT NULL DEFAULT '[]',
    host_routes       TEXT NOT NULL DEFAULT '[]',
    enable_dhcp       BIGINT NOT NULL DEFAULT 1,
    ipv6_ra_mode      TEXT,
    ipv6_address_mode TEXT,
    tags              TEXT NOT NULL DEFAULT '[]',
    revision_number   BIGINT NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX subnets_network ON subnets (network_id);
CREATE INDEX subnets_project ON subnets (project_id);

CREATE TABLE ports (
    id                    TEXT PRIMARY KEY,
    network_id            TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    project_id            TEXT NOT NULL,
    name                  TEXT NOT NULL DEFAULT '',
    description           TEXT NOT NULL DEFAULT '',
    mac_address           TEXT NOT NULL,
    admin_state_up        BIGINT NOT NULL DEFAULT 1,
    status                TEXT NOT NULL DEFAULT 'DOWN',
    device_id             TEXT NOT NULL DEFAULT '',
    device_owner          TEXT NOT NULL DEFAULT '',
    host_id               TEXT NOT NULL DEFAULT '',
    vif_type              TEXT NOT NULL DEFAULT 'unbound',
    vnic_type             TEXT NOT NULL DEFAULT 'normal',
    binding_profile       TEXT NOT NULL DEFAULT '{}',
    vif_details           TEXT NOT NULL DEFAULT '{}',
    port_security_enabled BIGINT NOT NULL DEFAULT 1,
    security_groups       TEXT NOT NULL DEFAULT '[]',
    allowed_address_pairs TEXT NOT NULL DEFAULT '[]',
    extra_dhcp_opts       TEXT NOT NULL DEFAULT '[]',
    tags                  TEXT NOT NULL DEFAULT '[]',
    revision_number       BIGINT NOT NULL DEFAULT 0,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    UNIQUE (network_id, mac_address)
);
CREATE INDEX ports_project ON ports (project_id);
CREATE INDEX ports_network ON ports (network_id);
CREATE INDEX ports_device ON ports (device_id);

-- One row per address handed out. The primary key is what keeps IPAM safe under concurrency:
-- two requests may race for one address, exactly one insert wins.
CREATE TABLE ip_allocations (
    subnet_id  TEXT NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
    ip_address TEXT NOT NULL,
    -- The address as 32 zero-padded hex digits, so string order is numeric order and the next
    -- free candidate can be found through the index.
    ip_key     TEXT NOT NULL,
    port_id    TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
    network_id TEXT NOT NULL,
    PRIMARY KEY (subnet_id, ip_address)
);
CREATE UNIQUE INDEX ip_allocations_key ON ip_allocations (subnet_id, ip_key);
CREATE INDEX ip_allocations_port ON ip_allocations (port_id);
