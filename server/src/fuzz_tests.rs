//! Property tests over every route that parses a request body: arbitrary JSON values and
//! mutations of a valid example body (fields dropped, types swapped, huge numbers, long and
//! unicode strings, nulls) go through the whole application over real SQLite. The server may
//! refuse them, with a 4xx fault, but never panic, hang or answer 5xx.
//!
//! Cases per route and strategy: `PROPTEST_CASES` (default [`DEFAULT_CASES`], about 30 s in a
//! debug build); e.g. `PROPTEST_CASES=2000 cargo test -p meridian-server fuzz_` for a long run.
//! [`ROUTES`] lists every POST/PUT/PATCH route; `the_route_table_covers_every_body_route` reads
//! the routers' source so a new route without a row fails.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::body::Body;
use axum::http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::{Map, Value, json};

use crate::testing::{Reply, TestApp};

const DEFAULT_CASES: u32 = 12;

/// Who sends a route's requests.
#[derive(Clone, Copy, Debug)]
enum Auth {
    /// No token (token issue).
    None,
    /// The cloud admin's project token.
    Admin,
    /// An agent (`Authorization: Bearer …`).
    Agent,
}

/// What a route's body is.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A JSON document; the function gives a valid example from the fixtures.
    Json(fn(&Fixtures) -> Value),
    /// A JSON-patch document (Glance's `application/openstack-images-v2.1-json-patch`).
    JsonPatch(fn(&Fixtures) -> Value),
    /// The route ignores its body (tag and grant PUTs, image actions): sent arbitrary JSON anyway.
    Ignored,
    /// Not JSON at all (image data, streamed): left to the image tests.
    Raw,
}

/// One body-taking route: method, its pattern as the router spells it (with the service's
/// prefix), the fixtures that fill its `{…}` segments in order, who calls it, and its body.
struct Route {
    method: &'static str,
    pattern: &'static str,
    params: &'static [&'static str],
    auth: Auth,
    kind: Kind,
}

const fn r(
    method: &'static str,
    pattern: &'static str,
    params: &'static [&'static str],
    auth: Auth,
    kind: Kind,
) -> Route {
    Route { method, pattern, params, auth, kind }
}

use Auth::{Admin, Agent};

/// Every POST/PUT/PATCH route of the server.
const ROUTES: &[Route] = &[
    // Identity
    r(
        "POST",
        "/identity/v3/auth/tokens",
        &[],
        Auth::None,
        Kind::Json(|_| {
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin",
            "domain": {"id": "default"}, "password": "adminpw"}}}, "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
        }),
    ),
    r("POST", "/identity/v3/domains", &[], Admin, Kind::Json(|_| json!({"domain": {"name": "fz-domain"}}))),
    r(
        "PATCH",
        "/identity/v3/domains/{id}",
        &["domain"],
        Admin,
        Kind::Json(|_| json!({"domain": {"description": "d"}})),
    ),
    r(
        "POST",
        "/identity/v3/projects",
        &[],
        Admin,
        Kind::Json(|_| json!({"project": {"name": "fz-project", "tags": ["a"]}})),
    ),
    r(
        "PATCH",
        "/identity/v3/projects/{id}",
        &["project"],
        Admin,
        Kind::Json(|_| json!({"project": {"description": "d", "enabled": true}})),
    ),
    r("PUT", "/identity/v3/projects/{id}/tags", &["project"], Admin, Kind::Json(|_| json!({"tags": ["a", "b"]}))),
    r("PUT", "/identity/v3/projects/{id}/tags/{tag}", &["project", "tag"], Admin, Kind::Ignored),
    r(
        "POST",
        "/identity/v3/users",
        &[],
        Admin,
        Kind::Json(
            |f| json!({"user": {"name": "fz-user", "password": "pw", "default_project_id": f.get("project"), "enabled": true}}),
        ),
    ),
    r(
        "PATCH",
        "/identity/v3/users/{id}",
        &["user"],
        Admin,
        Kind::Json(|_| json!({"user": {"email": "a@b.c", "enabled": true}})),
    ),
    r(
        "POST",
        "/identity/v3/users/{id}/password",
        &["user"],
        Admin,
        Kind::Json(|_| json!({"user": {"password": "pw", "original_password": "pw"}})),
    ),
    r(
        "POST",
        "/identity/v3/users/{id}/application_credentials",
        &["admin_user"],
        Admin,
        Kind::Json(|_| {
            json!({"application_credential": {"name": "fz-cred", "roles": [{"name": "member"}], "expires_at": "2099-01-01T00:00:00",
            "access_rules": [{"service": "compute", "method": "GET", "path": "/v2.1/servers"}]}})
        }),
    ),
    r("POST", "/identity/v3/groups", &[], Admin, Kind::Json(|_| json!({"group": {"name": "fz-group"}}))),
    r("PATCH", "/identity/v3/groups/{id}", &["group"], Admin, Kind::Json(|_| json!({"group": {"description": "d"}}))),
    r("PUT", "/identity/v3/groups/{gid}/users/{uid}", &["group", "user"], Admin, Kind::Ignored),
    r("POST", "/identity/v3/roles", &[], Admin, Kind::Json(|_| json!({"role": {"name": "fz-role"}}))),
    r("PATCH", "/identity/v3/roles/{id}", &["role"], Admin, Kind::Json(|_| json!({"role": {"description": "d"}}))),
    r("PUT", "/identity/v3/roles/{prior}/implies/{implied}", &["role", "role2"], Admin, Kind::Ignored),
    // The grant routes are built from variables (grants.rs); one stands for them all.
    r("PUT", "/identity/v3/projects/{tid}/users/{aid}/roles/{rid}", &["project", "user", "role"], Admin, Kind::Ignored),
    r(
        "POST",
        "/identity/v3/services",
        &[],
        Admin,
        Kind::Json(|_| json!({"service": {"type": "fz", "name": "fz", "enabled": true}})),
    ),
    r(
        "PATCH",
        "/identity/v3/services/{id}",
        &["service"],
        Admin,
        Kind::Json(|_| json!({"service": {"description": "d"}})),
    ),
    r(
        "POST",
        "/identity/v3/endpoints",
        &[],
        Admin,
        Kind::Json(
            |f| json!({"endpoint": {"service_id": f.get("service"), "interface": "public", "url": "http://fz.test/", "region_id": "RegionOne"}}),
        ),
    ),
    r(
        "PATCH",
        "/identity/v3/endpoints/{id}",
        &["endpoint"],
        Admin,
        Kind::Json(|_| json!({"endpoint": {"url": "http://fz2.test/"}})),
    ),
    r(
        "POST",
        "/identity/v3/regions",
        &[],
        Admin,
        Kind::Json(|_| json!({"region": {"id": "fz-region", "description": "d"}})),
    ),
    r(
        "PUT",
        "/identity/v3/regions/{id}",
        &["new_region"],
        Admin,
        Kind::Json(|_| json!({"region": {"description": "d"}})),
    ),
    r(
        "PATCH",
        "/identity/v3/regions/{id}",
        &["region"],
        Admin,
        Kind::Json(|_| json!({"region": {"description": "d2"}})),
    ),
    // Compute
    r("POST", "/compute/v2.1/images/{id}/metadata", &["image"], Admin, Kind::Json(|_| json!({"metadata": {"k": "v"}}))),
    r("PUT", "/compute/v2.1/images/{id}/metadata", &["image"], Admin, Kind::Json(|_| json!({"metadata": {"k": "v"}}))),
    r(
        "PUT",
        "/compute/v2.1/images/{id}/metadata/{key}",
        &["image", "key"],
        Admin,
        Kind::Json(|_| json!({"meta": {"k": "v"}})),
    ),
    r(
        "POST",
        "/compute/v2.1/flavors",
        &[],
        Admin,
        Kind::Json(|_| {
            json!({"flavor": {"name": "fz-flavor", "ram": 64, "vcpus": 1, "disk": 1, "swap": 0, "rxtx_factor": 1.0,
            "os-flavor-access:is_public": false}})
        }),
    ),
    r("PUT", "/compute/v2.1/flavors/{id}", &["flavor"], Admin, Kind::Json(|_| json!({"flavor": {"description": "d"}}))),
    r(
        "POST",
        "/compute/v2.1/flavors/{id}/os-extra_specs",
        &["flavor"],
        Admin,
        Kind::Json(|_| json!({"extra_specs": {"hw:cpu_policy": "shared", "quota:disk_read_bytes_sec": "100"}})),
    ),
    r(
        "PUT",
        "/compute/v2.1/flavors/{id}/os-extra_specs/{key}",
        &["flavor", "spec_key"],
        Admin,
        Kind::Json(|_| json!({"hw:cpu_policy": "shared"})),
    ),
    r(
        "POST",
        "/compute/v2.1/flavors/{id}/action",
        &["flavor"],
        Admin,
        Kind::Json(|f| json!({"addTenantAccess": {"tenant": f.get("project")}})),
    ),
    r(
        "POST",
        "/compute/v2.1/os-keypairs",
        &[],
        Admin,
        Kind::Json(|_| json!({"keypair": {"name": "fz-key", "type": "ssh"}})),
    ),
    r(
        "POST",
        "/compute/v2.1/os-security-groups",
        &[],
        Admin,
        Kind::Json(|_| json!({"security_group": {"name": "fz-nova-sg", "description": "d"}})),
    ),
    r(
        "PUT",
        "/compute/v2.1/os-security-groups/{id}",
        &["security_group"],
        Admin,
        Kind::Json(|_| json!({"security_group": {"name": "renamed", "description": "d2"}})),
    ),
    r(
        "POST",
        "/compute/v2.1/os-security-group-rules",
        &[],
        Admin,
        Kind::Json(|f| {
            json!({"security_group_rule": {"parent_group_id": f.get("security_group"), "ip_protocol": "tcp",
            "from_port": 2222, "to_port": 2222, "cidr": "10.9.0.0/16"}})
        }),
    ),
    r(
        "PUT",
        "/compute/v2.1/os-quota-sets/{project_id}",
        &["project"],
        Admin,
        Kind::Json(|_| json!({"quota_set": {"instances": 20, "cores": 40, "ram": 51200, "force": false}})),
    ),
    r(
        "POST",
        "/compute/v2.1/servers",
        &[],
        Admin,
        Kind::Json(|f| {
            json!({"server": {"name": "fz-server", "imageRef": f.get("image"), "flavorRef": "42",
            "networks": [{"uuid": f.get("network")}], "metadata": {"k": "v"}, "min_count": 1, "max_count": 1,
            "user_data": "aGk=", "availability_zone": "nova", "config_drive": true}})
        }),
    ),
    // Before the reboot below, which leaves the server in a task.
    r(
        "POST",
        "/compute/v2.1/servers/{id}/os-volume_attachments",
        &["server"],
        Admin,
        Kind::Json(|f| json!({"volumeAttachment": {"volumeId": f.get("volume")}})),
    ),
    r("PUT", "/compute/v2.1/servers/{id}", &["server"], Admin, Kind::Json(|_| json!({"server": {"name": "renamed"}}))),
    r(
        "POST",
        "/compute/v2.1/servers/{id}/action",
        &["server"],
        Admin,
        Kind::Json(|_| json!({"reboot": {"type": "HARD"}})),
    ),
    // Cinder
    r(
        "POST",
        "/volume/v3/{project_id}/volumes",
        &["project"],
        Admin,
        Kind::Json(|_| json!({"volume": {"size": 1, "name": "fz"}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/volumes/{id}",
        &["project", "volume"],
        Admin,
        Kind::Json(|_| json!({"volume": {"name": "fz-renamed"}})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/volumes/{id}/action",
        &["project", "volume"],
        Admin,
        Kind::Json(|_| json!({"os-set_bootable": {"bootable": true}})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/volumes/{id}/metadata",
        &["project", "volume"],
        Admin,
        Kind::Json(|_| json!({"metadata": {"k": "v"}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/volumes/{id}/metadata",
        &["project", "volume"],
        Admin,
        Kind::Json(|_| json!({"metadata": {"k": "v"}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/volumes/{id}/metadata/{key}",
        &["project", "volume", "key"],
        Admin,
        Kind::Json(|_| json!({"meta": {"k": "v"}})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/snapshots",
        &["project"],
        Admin,
        Kind::Json(|f| json!({"snapshot": {"volume_id": f.get("snap_volume"), "name": "fz", "force": true}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/snapshots/{id}",
        &["project", "snapshot"],
        Admin,
        Kind::Json(|_| json!({"snapshot": {"name": "fz-renamed"}})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/snapshots/{id}/action",
        &["project", "snapshot"],
        Admin,
        Kind::Json(|_| json!({"os-reset_status": {"status": "available"}})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/snapshots/{id}/metadata",
        &["project", "snapshot"],
        Admin,
        Kind::Json(|_| json!({"metadata": {"k": "v"}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/snapshots/{id}/metadata",
        &["project", "snapshot"],
        Admin,
        Kind::Json(|_| json!({"metadata": {"k": "v"}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/snapshots/{id}/metadata/{key}",
        &["project", "snapshot", "key"],
        Admin,
        Kind::Json(|_| json!({"meta": {"k": "v"}})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/types",
        &["project"],
        Admin,
        Kind::Json(|_| json!({"volume_type": {"name": "fz-type"}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/types/{id}",
        &["project", "volume_type"],
        Admin,
        Kind::Json(|_| json!({"volume_type": {"description": "d"}})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/types/{id}/extra_specs",
        &["project", "volume_type"],
        Admin,
        Kind::Json(|_| json!({"extra_specs": {"k": "v"}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/types/{id}/extra_specs/{key}",
        &["project", "volume_type", "spec_key"],
        Admin,
        Kind::Json(|_| json!({"hw:cpu_policy": "dedicated"})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/attachments",
        &["project"],
        Admin,
        Kind::Json(|f| json!({"attachment": {"volume_uuid": f.get("volume3"), "instance_uuid": f.get("server")}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/attachments/{id}",
        &["project", "attachment"],
        Admin,
        Kind::Json(|_| json!({"attachment": {"connector": {"host": "fz-host", "mountpoint": "/dev/vdz"}}})),
    ),
    r(
        "POST",
        "/volume/v3/{project_id}/attachments/{id}/action",
        &["project", "attachment"],
        Admin,
        Kind::Json(|_| json!({"os-complete": {}})),
    ),
    r(
        "PUT",
        "/volume/v3/{project_id}/os-quota-sets/{project_id}",
        &["project", "project"],
        Admin,
        Kind::Json(|_| json!({"quota_set": {"volumes": 20}})),
    ),
    r(
        "POST",
        "/compute/v2.1/servers/{id}/remote-consoles",
        &["server"],
        Admin,
        Kind::Json(|_| json!({"remote_console": {"protocol": "serial", "type": "serial"}})),
    ),
    r(
        "POST",
        "/compute/v2.1/servers/{id}/metadata",
        &["server"],
        Admin,
        Kind::Json(|_| json!({"metadata": {"k": "v"}})),
    ),
    r(
        "PUT",
        "/compute/v2.1/servers/{id}/metadata",
        &["server"],
        Admin,
        Kind::Json(|_| json!({"metadata": {"k": "v"}})),
    ),
    r(
        "PUT",
        "/compute/v2.1/servers/{id}/metadata/{key}",
        &["server", "key"],
        Admin,
        Kind::Json(|_| json!({"meta": {"k": "v"}})),
    ),
    r("PUT", "/compute/v2.1/servers/{id}/tags", &["server"], Admin, Kind::Json(|_| json!({"tags": ["a", "b"]}))),
    r("PUT", "/compute/v2.1/servers/{id}/tags/{tag}", &["server", "key"], Admin, Kind::Ignored),
    r(
        "PUT",
        "/compute/v2.1/os-services/{id}",
        &["compute_service"],
        Admin,
        Kind::Json(|_| json!({"status": "disabled", "disabled_reason": "maintenance", "forced_down": false})),
    ),
    // Issue 17: aggregates, server groups, hosts, quota classes, external events, interfaces,
    // server migrations.
    r(
        "POST",
        "/compute/v2.1/os-aggregates",
        &[],
        Admin,
        Kind::Json(|_| json!({"aggregate": {"name": "fz-agg", "availability_zone": "fz-az"}})),
    ),
    r(
        "PUT",
        "/compute/v2.1/os-aggregates/{id}",
        &["aggregate"],
        Admin,
        Kind::Json(|_| json!({"aggregate": {"name": "fz-renamed"}})),
    ),
    r(
        "POST",
        "/compute/v2.1/os-aggregates/{id}/action",
        &["aggregate"],
        Admin,
        Kind::Json(|_| json!({"set_metadata": {"metadata": {"k": "v", "gone": null}}})),
    ),
    r(
        "POST",
        "/compute/v2.1/os-server-groups",
        &[],
        Admin,
        Kind::Json(|_| json!({"server_group": {"name": "fz-group", "policies": ["anti-affinity"]}})),
    ),
    // No body is ever accepted here (501 for every valid one, as a libvirt Nova): its validation
    // is `admin_api_tests`'.
    r("PUT", "/compute/v2.1/os-hosts/{host}", &["key"], Admin, Kind::Raw),
    r(
        "PUT",
        "/compute/v2.1/os-quota-class-sets/{id}",
        &["quota_class"],
        Admin,
        Kind::Json(|_| json!({"quota_class_set": {"instances": 20, "cores": 40, "ram": 51200}})),
    ),
    r(
        "POST",
        "/compute/v2.1/os-server-external-events",
        &[],
        Admin,
        Kind::Json(|f| json!({"events": [{"name": "network-changed", "server_uuid": f.get("server")}]})),
    ),
    // A valid attach waits for the host's hot plug, which the fuzz cloud's host never does, and
    // no live migration exists to force: both left to `extras_tests` and `migration_tests`.
    r("POST", "/compute/v2.1/servers/{id}/os-interface", &["key"], Admin, Kind::Raw),
    r("POST", "/compute/v2.1/servers/{id}/migrations/{migration_id}/action", &["server", "key"], Admin, Kind::Raw),
    // The nova-network writes Nova removed: 410 whatever the body.
    r("POST", "/compute/v2.1/os-networks", &[], Admin, Kind::Ignored),
    r("POST", "/compute/v2.1/os-networks/add", &[], Admin, Kind::Ignored),
    r("POST", "/compute/v2.1/os-networks/{id}/action", &["network"], Admin, Kind::Ignored),
    r("POST", "/compute/v2.1/os-tenant-networks", &[], Admin, Kind::Ignored),
    // The agent API
    r(
        "POST",
        "/agent/v1/register",
        &[],
        Agent,
        Kind::Json(|_| json!({"host": "fz-host", "inventory": inventory(), "agent_version": "0.1.0"})),
    ),
    r(
        "POST",
        "/agent/v1/hosts/{host}/heartbeat",
        &["host"],
        Agent,
        Kind::Json(
            |f| json!({"inventory": inventory(), "instances": [{"instance_id": f.get("server"), "power_state": "running"}]}),
        ),
    ),
    r(
        "POST",
        "/agent/v1/work/{id}/events",
        &["work"],
        Agent,
        Kind::Json(|_| json!({"type": "failed", "message": "m", "details": "d", "retryable": true})),
    ),
    r(
        "POST",
        "/agent/v1/events",
        &[],
        Agent,
        Kind::Json(|f| {
            json!({"events": [{"work_id": f.get("work"), "event": {"type": "progress", "task_state": "spawning"}},
            {"work_id": f.get("work"), "event": {"type": "done", "power_state": "running", "console": null}}]})
        }),
    ),
    // Volume bytes for an open upload: streamed, not JSON (the volume tests send them).
    r("PUT", "/agent/v1/images/{id}/file", &["queued_image"], Agent, Kind::Raw),
    // A migration's disk (streamed; the migration tests send it) and a guest's password post
    // through its metadata proxy (raw text; the metadata tests send it).
    r("PUT", "/agent/v1/migrations/{id}/disk", &["key"], Agent, Kind::Raw),
    // A running live migration's progress (only its source may post; the live migration
    // tests send it, with a malformed body too).
    r("POST", "/agent/v1/migrations/{id}/progress", &["key"], Agent, Kind::Raw),
    r("POST", "/agent/v1/metadata/{*path}", &["key"], Agent, Kind::Raw),
    // Network
    r(
        "POST",
        "/network/v2.0/networks",
        &[],
        Admin,
        Kind::Json(|_| json!({"network": {"name": "fz-net", "admin_state_up": true, "shared": false, "mtu": 1400}})),
    ),
    r(
        "PUT",
        "/network/v2.0/networks/{id}",
        &["network"],
        Admin,
        Kind::Json(|_| json!({"network": {"name": "renamed", "mtu": 1450}})),
    ),
    r(
        "POST",
        "/network/v2.0/subnets",
        &[],
        Admin,
        Kind::Json(|f| {
            json!({"subnet": {"network_id": f.get("network"), "cidr": "10.99.0.0/24", "ip_version": 4, "gateway_ip": "10.99.0.1",
            "allocation_pools": [{"start": "10.99.0.10", "end": "10.99.0.20"}], "dns_nameservers": ["10.0.0.2"],
            "host_routes": [{"destination": "10.1.0.0/16", "nexthop": "10.99.0.3"}], "enable_dhcp": true}})
        }),
    ),
    r(
        "PUT",
        "/network/v2.0/subnets/{id}",
        &["subnet"],
        Admin,
        Kind::Json(
            |_| json!({"subnet": {"name": "renamed", "allocation_pools": [{"start": "10.88.0.10", "end": "10.88.0.30"}]}}),
        ),
    ),
    r(
        "POST",
        "/network/v2.0/ports",
        &[],
        Admin,
        Kind::Json(|f| {
            json!({"port": {"network_id": f.get("network"), "name": "fz-port", "fixed_ips": [{"subnet_id": f.get("subnet"), "ip_address": "10.88.0.40"}],
            "mac_address": "fa:16:3e:00:00:01", "admin_state_up": true}})
        }),
    ),
    r(
        "PUT",
        "/network/v2.0/ports/{id}",
        &["port"],
        Admin,
        Kind::Json(
            |f| json!({"port": {"name": "renamed", "fixed_ips": [{"subnet_id": f.get("subnet")}], "device_id": "d", "device_owner": "compute:nova"}}),
        ),
    ),
    r(
        "POST",
        "/network/v2.0/security-groups",
        &[],
        Admin,
        Kind::Json(|_| json!({"security_group": {"name": "fz-sg", "description": "d", "stateful": true}})),
    ),
    r(
        "PUT",
        "/network/v2.0/security-groups/{id}",
        &["security_group"],
        Admin,
        Kind::Json(|_| json!({"security_group": {"name": "renamed", "description": "d2"}})),
    ),
    r(
        "POST",
        "/network/v2.0/security-group-rules",
        &[],
        Admin,
        Kind::Json(|f| {
            json!({"security_group_rule": {"security_group_id": f.get("security_group"), "direction": "ingress",
            "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_ip_prefix": "10.0.0.0/8", "description": "ssh"}})
        }),
    ),
    r("PUT", "/network/v2.0/networks/{id}/tags", &["network"], Admin, Kind::Json(|_| json!({"tags": ["a", "b"]}))),
    r("PUT", "/network/v2.0/networks/{id}/tags/{tag}", &["network", "tag"], Admin, Kind::Ignored),
    r("PUT", "/network/v2.0/subnets/{id}/tags", &["subnet"], Admin, Kind::Json(|_| json!({"tags": ["a", "b"]}))),
    r("PUT", "/network/v2.0/subnets/{id}/tags/{tag}", &["subnet", "tag"], Admin, Kind::Ignored),
    r("PUT", "/network/v2.0/ports/{id}/tags", &["port"], Admin, Kind::Json(|_| json!({"tags": ["a", "b"]}))),
    r("PUT", "/network/v2.0/ports/{id}/tags/{tag}", &["port", "tag"], Admin, Kind::Ignored),
    r(
        "PUT",
        "/network/v2.0/quotas/{project_id}",
        &["project"],
        Admin,
        Kind::Json(|_| json!({"quota": {"network": 10, "subnet": 10, "port": 50, "check_limit": true}})),
    ),
    // Image
    r(
        "POST",
        "/image/v2/images",
        &[],
        Admin,
        Kind::Json(|_| {
            json!({"name": "fz-image", "disk_format": "qcow2", "container_format": "bare", "visibility": "private",
            "min_ram": 0, "min_disk": 0, "tags": ["t"], "protected": false, "custom": "p"})
        }),
    ),
    r(
        "PATCH",
        "/image/v2/images/{id}",
        &["queued_image"],
        Admin,
        Kind::JsonPatch(|_| {
            json!([{"op": "replace", "path": "/name", "value": "renamed"}, {"op": "add", "path": "/custom", "value": "x"},
            {"op": "remove", "path": "/custom"}])
        }),
    ),
    r("PUT", "/image/v2/images/{id}/file", &["queued_image"], Admin, Kind::Raw),
    r("POST", "/image/v2/images/{id}/actions/deactivate", &["queued_image"], Admin, Kind::Ignored),
    r("POST", "/image/v2/images/{id}/actions/reactivate", &["queued_image"], Admin, Kind::Ignored),
    r("PUT", "/image/v2/images/{id}/tags/{tag}", &["queued_image", "tag"], Admin, Kind::Ignored),
    r(
        "POST",
        "/image/v2/images/{id}/members",
        &["shared_image"],
        Admin,
        Kind::Json(|f| json!({"member": f.get("project")})),
    ),
    r(
        "PUT",
        "/image/v2/images/{id}/members/{member_id}",
        &["shared_image", "project"],
        Admin,
        Kind::Json(|_| json!({"status": "accepted"})),
    ),
];

fn inventory() -> Value {
    json!({"vcpus": 4, "memory_mb": 8192, "disk_gb": 100, "reserved_vcpus": 0, "reserved_memory_mb": 512,
        "reserved_disk_gb": 1, "hypervisor_type": "QEMU", "hypervisor_version": 8002000, "cpu_arch": "x86_64",
        "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": false,
        "availability_zone": "nova", "uptime": ""})
}

/// Ids of the resources the routes act on, and the agent's bearer token.
struct Fixtures {
    ids: HashMap<&'static str, String>,
    agent_bearer: String,
    /// The join token, which only registers.
    join_bearer: String,
}

impl Fixtures {
    fn get(&self, key: &str) -> String {
        self.ids.get(key).cloned().unwrap_or_else(|| panic!("no fixture {key}"))
    }

    /// The route's path with its `{…}` segments filled in.
    fn path(&self, route: &Route) -> String {
        let mut out = String::new();
        let mut params = route.params.iter();
        let mut rest = route.pattern;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').expect("closed segment") + open;
            out.push_str(&rest[..open]);
            out.push_str(&self.get(params.next().unwrap_or_else(|| panic!("{}: too few params", route.pattern))));
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn id_of(body: &Value, pointer: &str) -> String {
    body.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no {pointer} in {body}")).to_string()
}

/// Creates one of each resource the routes name.
async fn fixtures(app: &TestApp) -> Fixtures {
    let t = app.admin_token.clone();
    let mut ids: HashMap<&'static str, String> = HashMap::new();
    let post = async |path: &str, body: Value, pointer: &str| -> String {
        let r = app.json(Method::POST, path, &t, body).await;
        assert!(r.status.is_success(), "fixture {path}: {} {}", r.status, r.body);
        id_of(&r.body, pointer)
    };
    ids.insert("domain", post("/identity/v3/domains", json!({"domain": {"name": "fx-d"}}), "/domain/id").await);
    ids.insert("project", post("/identity/v3/projects", json!({"project": {"name": "fx-p"}}), "/project/id").await);
    ids.insert(
        "user",
        post("/identity/v3/users", json!({"user": {"name": "fx-u", "password": "pw"}}), "/user/id").await,
    );
    ids.insert("group", post("/identity/v3/groups", json!({"group": {"name": "fx-g"}}), "/group/id").await);
    ids.insert("role", post("/identity/v3/roles", json!({"role": {"name": "fx-r"}}), "/role/id").await);
    ids.insert("role2", post("/identity/v3/roles", json!({"role": {"name": "fx-r2"}}), "/role/id").await);
    let service = post("/identity/v3/services", json!({"service": {"type": "fx", "name": "fx"}}), "/service/id").await;
    let endpoint = json!({"endpoint": {"service_id": service, "interface": "internal", "url": "http://fx.test/"}});
    ids.insert("endpoint", post("/identity/v3/endpoints", endpoint, "/endpoint/id").await);
    ids.insert("service", service);
    ids.insert("region", post("/identity/v3/regions", json!({"region": {"id": "fx-region"}}), "/region/id").await);
    ids.insert(
        "flavor",
        post(
            "/compute/v2.1/flavors",
            json!({"flavor": {"name": "fx-f", "ram": 64, "vcpus": 1, "disk": 1, "os-flavor-access:is_public": false}}),
            "/flavor/id",
        )
        .await,
    );
    let image_body = json!({"name": "fx-i", "disk_format": "raw", "container_format": "bare", "visibility": "public"});
    let image = post("/image/v2/images", image_body, "/id").await;
    let r = app
        .call(
            Method::PUT,
            &format!("/image/v2/images/{image}/file"),
            Some(&t),
            &[("content-type", "application/octet-stream")],
            Body::from(vec![7u8; 4096]),
        )
        .await;
    assert!(r.status.is_success(), "upload: {}", r.status);
    ids.insert("image", image);
    let queued = json!({"name": "fx-q", "disk_format": "raw", "container_format": "bare"});
    ids.insert("queued_image", post("/image/v2/images", queued, "/id").await);
    let shared = json!({"name": "fx-s", "disk_format": "raw", "container_format": "bare", "visibility": "shared"});
    ids.insert("shared_image", post("/image/v2/images", shared, "/id").await);
    let net = json!({"network": {"name": "fx-net", "shared": true}});
    let network = post("/network/v2.0/networks", net, "/network/id").await;
    let subnet = json!({"subnet": {"network_id": network, "cidr": "10.88.0.0/24", "ip_version": 4}});
    ids.insert("subnet", post("/network/v2.0/subnets", subnet, "/subnet/id").await);
    ids.insert("port", post("/network/v2.0/ports", json!({"port": {"network_id": network}}), "/port/id").await);
    let sg = json!({"security_group": {"name": "fx-sg"}});
    ids.insert("security_group", post("/network/v2.0/security-groups", sg, "/security_group/id").await);
    let agent_bearer = agent_bearer(app).await;
    // A host for the heartbeat route and the server.
    let reg = json!({"host": "fx-host", "inventory": inventory(), "agent_version": "0.1.0"});
    let r = app
        .call(
            Method::POST,
            "/agent/v1/register",
            None,
            &[("content-type", "application/json"), ("authorization", &agent_bearer)],
            Body::from(reg.to_string()),
        )
        .await;
    assert!(r.status.is_success(), "register: {} {}", r.status, r.body);
    // The join token only registers; everything else takes the host's own credential.
    let join_bearer = agent_bearer;
    let agent_bearer = format!("Bearer {}", id_of(&r.body, "/credential"));
    let server = json!({"server": {"name": "fx-s", "imageRef": ids["image"], "flavorRef": "42", "networks": [{"uuid": network}]}});
    ids.insert("network", network);
    ids.insert("server", post("/compute/v2.1/servers", server, "/server/id").await);
    // The build goes to fx-host; finishing it as its agent would makes the server ACTIVE.
    let agent = |method: Method, path: String, body: Option<Value>| {
        let bearer = agent_bearer.clone();
        async move {
            let mut headers = vec![("authorization", bearer.as_str())];
            if body.is_some() {
                headers.push(("content-type", "application/json"));
            }
            let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
            app.call(method, &path, None, &headers, body).await
        }
    };
    let work = agent(Method::GET, "/agent/v1/hosts/fx-host/work?wait=5".into(), None).await;
    let work_id = id_of(&work.body, "/0/id");
    let done = json!({"type": "done", "power_state": "running", "console": null});
    let r = agent(Method::POST, format!("/agent/v1/work/{work_id}/events"), Some(done)).await;
    assert!(r.status.is_success(), "build done: {} {}", r.status, r.body);
    ids.insert("work", work_id);
    // A volume on fx-host, made as its agent would, and a volume type.
    let project = ids["project"].clone();
    let volume = post(&format!("/volume/v3/{project}/volumes"), json!({"volume": {"size": 1}}), "/volume/id").await;
    let work = agent(Method::GET, "/agent/v1/hosts/fx-host/work?wait=5".into(), None).await;
    let vwork = id_of(&work.body, "/0/id");
    let done = json!({"type": "done", "power_state": "no_state", "console": null});
    let r = agent(Method::POST, format!("/agent/v1/work/{vwork}/events"), Some(done.clone())).await;
    assert!(r.status.is_success(), "volume made: {} {}", r.status, r.body);
    ids.insert("volume", volume);
    // Two more: one with an attachment (the attachments API's routes), one to attach.
    for key in ["volume2", "volume3"] {
        let v = post(&format!("/volume/v3/{project}/volumes"), json!({"volume": {"size": 1}}), "/volume/id").await;
        let work = agent(Method::GET, "/agent/v1/hosts/fx-host/work?wait=5".into(), None).await;
        let vwork = id_of(&work.body, "/0/id");
        let done = json!({"type": "done", "power_state": "no_state", "console": null});
        let r = agent(Method::POST, format!("/agent/v1/work/{vwork}/events"), Some(done)).await;
        assert!(r.status.is_success(), "volume made: {} {}", r.status, r.body);
        ids.insert(key, v);
    }
    let r = app
        .call(
            Method::POST,
            &format!("/volume/v3/{project}/attachments"),
            Some(&t),
            &[("content-type", "application/json"), ("openstack-api-version", "volume 3.27")],
            Body::from(json!({"attachment": {"volume_uuid": ids["volume2"]}}).to_string()),
        )
        .await;
    assert!(r.status.is_success(), "attachment: {} {}", r.status, r.body);
    ids.insert("attachment", id_of(&r.body, "/attachment/id"));
    // Another volume (the first one's examples attach it) and its snapshot, made as the agent
    // would make them.
    let svol = post(&format!("/volume/v3/{project}/volumes"), json!({"volume": {"size": 1}}), "/volume/id").await;
    let snap = json!({"snapshot": {"volume_id": svol}});
    for _ in 0..2 {
        let work = agent(Method::GET, "/agent/v1/hosts/fx-host/work?wait=5".into(), None).await;
        let wid = id_of(&work.body, "/0/id");
        let r = agent(Method::POST, format!("/agent/v1/work/{wid}/events"), Some(done.clone())).await;
        assert!(r.status.is_success(), "made: {} {}", r.status, r.body);
        if !ids.contains_key("snapshot") {
            ids.insert(
                "snapshot",
                post(&format!("/volume/v3/{project}/snapshots"), snap.clone(), "/snapshot/id").await,
            );
        }
    }
    ids.insert("snap_volume", svol);
    let vtype = json!({"volume_type": {"name": "fx-type"}});
    ids.insert("volume_type", post(&format!("/volume/v3/{project}/types"), vtype, "/volume_type/id").await);
    let me =
        app.call(Method::GET, "/identity/v3/auth/tokens", Some(&t), &[("x-subject-token", &t)], Body::empty()).await;
    ids.insert("admin_user", id_of(&me.body, "/token/user/id"));
    ids.insert("tag", "fz-tag".into());
    ids.insert("key", "k".into());
    ids.insert("spec_key", "hw:cpu_policy".into());
    ids.insert("host", "fx-host".into());
    ids.insert("new_region", "fz-put-region".into());

    let services = app
        .call(
            Method::GET,
            "/compute/v2.1/os-services?binary=nova-compute",
            Some(&t),
            &[("openstack-api-version", "compute latest")],
            Body::empty(),
        )
        .await;
    ids.insert("compute_service", id_of(&services.body, "/services/0/id"));
    let agg = app.json(Method::POST, "/compute/v2.1/os-aggregates", &t, json!({"aggregate": {"name": "fx-agg"}})).await;
    assert!(agg.status.is_success(), "fixture aggregate: {} {}", agg.status, agg.body);
    ids.insert("aggregate", agg.body["aggregate"]["id"].to_string());
    ids.insert("quota_class", "default".into());
    Fixtures { ids, agent_bearer, join_bearer }
}

/// The `Authorization` header that registers an agent (the join token).
async fn agent_bearer(app: &TestApp) -> String {
    let token = app.state.store.setting("agent_token").await.expect("setting").expect("agent token");
    format!("Bearer {token}")
}

// ---- strategies ----

/// Scalars that break naive code: huge and negative numbers, floats, long and unicode strings.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(i64::from(i32::MAX) + 1), Just(i64::MIN), Just(i64::MAX)]
            .prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        Just(json!(1e300)),
        ".{0,12}".prop_map(Value::String),
        "\\PC{0,40}".prop_map(Value::String),
        (1usize..5).prop_map(|n| Value::String("é𝄞\u{0}\u{202e}".repeat(n * 100))),
        Just(Value::String("x".repeat(70_000))),
        prop_oneof![
            Just("10.0.0.0/8"),
            Just("::/0"),
            Just("-1"),
            Just("true"),
            Just("2099-13-45T99:99:99Z"),
            Just("00000000-0000-0000-0000-000000000000"),
            Just("%s%n"),
            Just("'; DROP TABLE x; --")
        ]
        .prop_map(|s| Value::String(s.into())),
    ]
}

/// Arbitrary JSON whose object keys are sometimes the ones the route knows (so values reach
/// the handler's field checks) and sometimes anything.
fn arbitrary_json(keys: Vec<String>) -> impl Strategy<Value = Value> {
    let key = prop_oneof![3 => prop::sample::select(keys), 1 => "\\PC{0,10}"];
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Every key in a JSON document.
fn keys_of(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                out.insert(k.clone());
                keys_of(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys_of(x, out)),
        _ => {}
    }
}

/// JSON pointers of every node under the root.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Drop,
    Replace(Value),
    WrapInArray,
    AddField(String, Value),
    ReplaceRoot(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Drop),
        5 => arbitrary_json(vec!["name".into(), "id".into()]).prop_map(Mutation::Replace),
        1 => Just(Mutation::WrapInArray),
        2 => ("\\PC{0,10}", leaf()).prop_map(|(k, v)| Mutation::AddField(k, v)),
        1 => leaf().prop_map(Mutation::ReplaceRoot),
    ]
}

/// Applies a mutation at the `at`-th node of the document (or the root when it has none).
fn apply(doc: &mut Value, at: prop::sample::Index, m: &Mutation) {
    let mut ps = Vec::new();
    pointers(doc, String::new(), &mut ps);
    if let Mutation::ReplaceRoot(v) = m {
        *doc = v.clone();
        return;
    }
    let Some(p) = (!ps.is_empty()).then(|| ps[at.index(ps.len())].clone()) else {
        *doc = Value::Null;
        return;
    };
    let (parent, last) = p.rsplit_once('/').expect("pointer");
    let Some(parent) = doc.pointer_mut(parent) else { return };
    let last = last.replace("~1", "/").replace("~0", "~");
    match (parent, m) {
        (Value::Object(o), Mutation::Drop) => drop(o.remove(&last)),
        (Value::Array(a), Mutation::Drop) => {
            if let Ok(i) = last.parse::<usize>() {
                a.remove(i);
            }
        }
        (Value::Object(o), Mutation::AddField(k, v)) => drop(o.insert(k.clone(), v.clone())),
        (parent, m) => {
            let node = match parent {
                Value::Object(o) => o.get_mut(&last),
                Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            };
            if let Some(node) = node {
                *node = match m {
                    Mutation::Replace(v) => v.clone(),
                    Mutation::WrapInArray => Value::Array(vec![node.take()]),
                    _ => node.take(),
                };
            }
        }
    }
}

// ---- the runs ----

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

/// Sends one body as the route's caller.
async fn request(app: &TestApp, f: &Fixtures, route: &Route, body: &Value, version: Option<&str>) -> Reply {
    let path = f.path(route);
    let method = Method::from_bytes(route.method.as_bytes()).expect("method");
    let ctype = match route.kind {
        Kind::JsonPatch(_) => "application/openstack-images-v2.1-json-patch",
        _ => "application/json",
    };
    let mut headers: Vec<(&str, &str)> = vec![("content-type", ctype)];
    let token = match route.auth {
        Auth::Admin => Some(app.admin_token.as_str()),
        Auth::None => None,
        Auth::Agent => {
            let bearer = if route.pattern == "/agent/v1/register" { &f.join_bearer } else { &f.agent_bearer };
            headers.push(("authorization", bearer.as_str()));
            None
        }
    };
    if let Some(v) = version {
        headers.push(("openstack-api-version", v));
    }
    app.call(method, &path, token, &headers, Body::from(body.to_string())).await
}

/// Sends one body; any 5xx, panic or hang fails the case.
async fn send(app: &TestApp, f: &Fixtures, route: &Route, body: &Value, version: Option<&str>) -> Result<(), String> {
    let reply = tokio::time::timeout(Duration::from_secs(20), request(app, f, route, body, version))
        .await
        .map_err(|_| format!("{} {} hung with body {body}", route.method, f.path(route)))?;
    if reply.status.is_server_error() {
        return Err(format!(
            "{} {} answered {} to {body}: {}",
            route.method,
            f.path(route),
            reply.status,
            String::from_utf8_lossy(&reply.bytes)
        ));
    }
    Ok(())
}

/// Runs `strategy` against `route` in `runner`; a failing case is reported with its shrunk body.
fn check_route<S>(
    rt: &tokio::runtime::Runtime,
    app: &TestApp,
    f: &Fixtures,
    route: &Route,
    strategy: S,
) -> Result<(), String>
where
    S: Strategy<Value = (Value, Option<&'static str>)>,
{
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |(body, version)| {
        rt.block_on(send(app, f, route, &body, version)).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, (body, version))) => {
            Err(format!("{} {}: {why}\n  minimal body: {body}\n  version: {version:?}", route.method, route.pattern))
        }
        Err(TestError::Abort(why)) => Err(format!("{} {}: aborted: {why}", route.method, route.pattern)),
    }
}

fn microversion() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![Just(None), Just(Some("compute 2.1")), Just(Some("compute latest")), Just(Some("volume latest"))]
}

fn example(route: &Route, f: &Fixtures) -> Option<Value> {
    match route.kind {
        Kind::Json(e) | Kind::JsonPatch(e) => Some(e(f)),
        Kind::Ignored => Some(json!({})),
        Kind::Raw => None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// (a) Arbitrary JSON documents to every body route.
#[test]
fn fuzz_arbitrary_json_bodies_never_5xx() {
    let rt = runtime();
    let app = rt.block_on(TestApp::new());
    let f = rt.block_on(fixtures(&app));
    let mut failures = Vec::new();
    for route in ROUTES {
        let Some(ex) = example(route, &f) else { continue };
        let mut keys = BTreeSet::new();
        keys_of(&ex, &mut keys);
        keys.insert("name".into());
        let strategy = (arbitrary_json(keys.into_iter().collect()), microversion());
        if let Err(e) = check_route(&rt, &app, &f, route, strategy) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} routes failed:\n{}", failures.len(), failures.join("\n"));
}

/// (b) Mutations of each route's valid example body.
#[test]
fn fuzz_mutated_example_bodies_never_5xx() {
    let rt = runtime();
    let app = rt.block_on(TestApp::new());
    let f = rt.block_on(fixtures(&app));
    let mut failures = Vec::new();
    for route in ROUTES {
        let Some(ex) = example(route, &f) else { continue };
        // The example itself must be accepted, or the mutations test only the first check.
        let strategy = (prop::collection::vec((any::<prop::sample::Index>(), mutation()), 1..4), microversion())
            .prop_map(move |(ms, v)| {
                let mut doc = ex.clone();
                for (at, m) in &ms {
                    apply(&mut doc, *at, m);
                }
                (doc, v)
            });
        if let Err(e) = check_route(&rt, &app, &f, route, strategy) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} routes failed:\n{}", failures.len(), failures.join("\n"));
}

/// Each JSON route's example is valid (2xx at the base or the latest microversion), so the
/// mutations start from a body that passes and reach the handlers' deeper checks.
#[test]
fn fuzz_examples_are_accepted() {
    let rt = runtime();
    let app = rt.block_on(TestApp::new());
    let f = rt.block_on(fixtures(&app));
    let mut refused = Vec::new();
    for route in ROUTES.iter().filter(|r| matches!(r.kind, Kind::Json(_) | Kind::JsonPatch(_))) {
        let body = example(route, &f).expect("example");
        let mut answers = Vec::new();
        for version in ["compute latest", "compute 2.1", "volume latest"] {
            let reply = rt.block_on(request(&app, &f, route, &body, Some(version)));
            if reply.status.is_success() {
                answers.clear();
                break;
            }
            answers.push(format!("{version}: {} {}", reply.status, String::from_utf8_lossy(&reply.bytes)));
        }
        if !answers.is_empty() {
            refused.push(format!("{} {}: {}", route.method, f.path(route), answers.join("; ")));
        }
    }
    assert!(refused.is_empty(), "examples refused:\n{}", refused.join("\n"));
}

/// The POST/PUT/PATCH routes the routers declare, read from their source: `(method, pattern)`
/// with the service's prefix. Patterns built from variables (the grant routes) are skipped.
fn declared_body_routes() -> BTreeSet<(String, String)> {
    let sources = [
        ("/identity", include_str!("identity/mod.rs")),
        ("/identity", include_str!("identity/grants.rs")),
        ("/compute/v2.1", include_str!("compute/mod.rs")),
        ("/agent/v1", include_str!("compute/agents.rs")),
        ("/network/v2.0", include_str!("network/mod.rs")),
        ("/image/v2", include_str!("image/mod.rs")),
        ("/volume/v3/{project_id}", include_str!("volume/mod.rs")),
        ("", include_str!("lib.rs")),
    ];
    let mut out = BTreeSet::new();
    for (prefix, src) in sources {
        let mut rest = src;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The call's text up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap_or(rest.len());
            let call = &rest[..end];
            let Some(pattern) = call.trim_start().strip_prefix('"').and_then(|s| s.split('"').next()) else {
                continue;
            };
            for method in ["post", "put", "patch"] {
                let hit = call
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !call[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'));
                if hit {
                    out.insert((method.to_uppercase(), format!("{prefix}{pattern}")));
                }
            }
        }
    }
    out
}

#[test]
fn the_route_table_covers_every_body_route() {
    let declared = declared_body_routes();
    assert!(declared.len() > 40, "the source scan found too few routes: {declared:?}");
    let listed: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_string(), r.pattern.to_string())).collect();
    let missing: Vec<_> = declared.difference(&listed).collect();
    assert!(missing.is_empty(), "routes without a row in fuzz_tests::ROUTES: {missing:?}");
    let grant = ("PUT".to_string(), "/identity/v3/projects/{tid}/users/{aid}/roles/{rid}".to_string());
    let stale: Vec<_> = listed.difference(&declared).filter(|r| **r != grant).collect();
    assert!(stale.is_empty(), "rows for routes that no longer exist: {stale:?}");
}
