//! Handler tests for security groups, their rules, port security and the agents' port-filter
//! feed, through the whole router.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::testing::{Reply, TestApp};

const V2: &str = "/network/v2.0";

fn kind(r: &Reply) -> &str {
    r.body["NeutronError"]["type"].as_str().unwrap_or("")
}

fn message(r: &Reply) -> &str {
    r.body["NeutronError"]["message"].as_str().unwrap_or("")
}

async fn call(app: &TestApp, method: Method, token: &str, path: &str, body: Value) -> Reply {
    app.json(method, &format!("{V2}{path}"), token, body).await
}

async fn project_id(app: &TestApp, name: &str) -> String {
    let r = app.json(Method::GET, &format!("/identity/v3/projects?name={name}"), &app.admin_token, Value::Null).await;
    r.body["projects"][0]["id"].as_str().expect("project").to_string()
}

async fn group(app: &TestApp, token: &str, name: &str) -> Value {
    let r = call(app, Method::POST, token, "/security-groups", json!({"security_group": {"name": name}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["security_group"].clone()
}

async fn rule(app: &TestApp, token: &str, body: Value) -> Reply {
    call(app, Method::POST, token, "/security-group-rules", json!({"security_group_rule": body})).await
}

/// A network with an IPv4 and an IPv6 subnet; its id.
async fn network(app: &TestApp, token: &str) -> String {
    let r = call(app, Method::POST, token, "/networks", json!({"network": {"name": "n"}})).await;
    let net = r.body["network"]["id"].as_str().expect("net").to_string();
    for (cidr, v) in [("10.0.0.0/24", 4), ("fd00::/64", 6)] {
        let body = json!({"subnet": {"network_id": net, "cidr": cidr, "ip_version": v}});
        let r = call(app, Method::POST, token, "/subnets", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    net
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

#[tokio::test]
async fn default_group_is_made_on_first_use_with_neutrons_rules() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let r = call(&app, Method::GET, &t, "/security-groups", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    let groups = r.body["security_groups"].as_array().expect("list").clone();
    assert_eq!(groups.len(), 1, "{}", r.body);
    let d = &groups[0];
    assert_eq!(d["name"], "default");
    assert_eq!(d["stateful"], true);
    assert_eq!(d["project_id"], d["tenant_id"]);
    let id = str_of(d, "id");
    let mut rules: Vec<(String, String, Value)> = d["security_group_rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| (str_of(r, "direction").into(), str_of(r, "ethertype").into(), r["remote_group_id"].clone()))
        .collect();
    rules.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        rules,
        vec![
            ("egress".into(), "IPv4".into(), Value::Null),
            ("egress".into(), "IPv6".into(), Value::Null),
            ("ingress".into(), "IPv4".into(), json!(id)),
            ("ingress".into(), "IPv6".into(), json!(id)),
        ]
    );
    // Asking again makes no second one.
    let r = call(&app, Method::GET, &t, "/security-groups", Value::Null).await;
    assert_eq!(r.body["security_groups"].as_array().map(Vec::len), Some(1));

    // The default group keeps its name and stays (for its members; an admin may delete it).
    let r =
        call(&app, Method::PUT, &t, &format!("/security-groups/{id}"), json!({"security_group": {"name": "x"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "SecurityGroupCannotUpdateDefault");
    let r =
        call(&app, Method::PUT, &t, &format!("/security-groups/{id}"), json!({"security_group": {"description": "d"}}))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = call(&app, Method::DELETE, &t, &format!("/security-groups/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "SecurityGroupCannotRemoveDefault");
    let r = call(&app, Method::POST, &t, "/security-groups", json!({"security_group": {"name": "Default"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "SecurityGroupDefaultAlreadyExists");
    let admin = app.admin_token.clone();
    let r = call(&app, Method::DELETE, &admin, &format!("/security-groups/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

#[tokio::test]
async fn groups_crud_list_fields_sort_and_pages() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let other = app.user_in_project("bob", "pb", "member").await;
    let g = group(&app, &t, "web").await;
    let id = str_of(&g, "id").to_string();
    // Neutron's template: egress anywhere, both families.
    let rules = g["security_group_rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 2, "{g}");
    assert!(rules.iter().all(|r| r["direction"] == "egress" && r["remote_ip_prefix"].is_null()), "{g}");
    assert_eq!(g["revision_number"], 0);
    for name in ["b-group", "a-group"] {
        group(&app, &t, name).await;
    }
    let r = call(
        &app,
        Method::PUT,
        &t,
        &format!("/security-groups/{id}"),
        json!({"security_group": {"name": "web2", "description": "d"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["security_group"]["name"], "web2");
    assert_eq!(r.body["security_group"]["revision_number"], 1);
    let r =
        call(&app, Method::PUT, &t, &format!("/security-groups/{id}"), json!({"security_group": {"name": "default"}}))
            .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = call(&app, Method::GET, &t, &format!("/security-groups/{id}?fields=id&fields=name"), Value::Null).await;
    assert_eq!(r.body["security_group"], json!({"id": id, "name": "web2"}));
    let r = call(&app, Method::GET, &t, "/security-groups?sort_key=name&sort_dir=asc&fields=name", Value::Null).await;
    let names: Vec<&str> =
        r.body["security_groups"].as_array().expect("list").iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, vec!["a-group", "b-group", "default", "web2"]);
    let r = call(&app, Method::GET, &t, "/security-groups?name=a-group", Value::Null).await;
    assert_eq!(r.body["security_groups"].as_array().map(Vec::len), Some(1));
    let r = call(&app, Method::GET, &t, "/security-groups?limit=2&sort_key=name&sort_dir=asc", Value::Null).await;
    assert_eq!(r.body["security_groups"].as_array().map(Vec::len), Some(2));
    let next = r.body["security_groups_links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["rel"] == "next"))
        .and_then(|l| l["href"].as_str())
        .expect("next link")
        .to_string();
    let path = next.split("/network/v2.0").nth(1).expect("path");
    let r = call(&app, Method::GET, &t, path, Value::Null).await;
    let names: Vec<&str> = r.body["security_groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: {}", r.body))
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, vec!["default", "web2"]);

    // Another project neither sees nor touches it.
    let r = call(&app, Method::GET, &other, &format!("/security-groups/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(kind(&r), "SecurityGroupNotFound");
    let r = call(&app, Method::GET, &other, "/security-groups", Value::Null).await;
    assert!(!r.body.to_string().contains(&id));

    let r = call(&app, Method::DELETE, &t, &format!("/security-groups/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&app, Method::GET, &t, &format!("/security-groups/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(message(&r), format!("Security group {id} does not exist"));
    // Its rules went with it.
    let r = call(&app, Method::GET, &t, &format!("/security-group-rules?security_group_id={id}"), Value::Null).await;
    assert_eq!(r.body["security_group_rules"], json!([]));
}

#[tokio::test]
async fn rules_are_validated_and_made_canonical_like_neutron() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let g = group(&app, &t, "web").await;
    let sg = str_of(&g, "id").to_string();
    let other = str_of(&group(&app, &t, "db").await, "id").to_string();
    let base = |extra: Value| {
        let mut b = json!({"security_group_id": sg, "direction": "ingress"});
        if let (Some(o), Value::Object(e)) = (b.as_object_mut(), extra) {
            o.extend(e);
        }
        b
    };

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"protocol": "bad_protocol_name"}),
            "SecurityGroupRuleInvalidProtocol",
            "bad_protocol_name not supported",
        ),
        (json!({"protocol": 256}), "SecurityGroupRuleInvalidProtocol", "256 not supported"),
        (
            json!({"protocol": "tcp", "port_range_min": -16, "port_range_max": 80}),
            "SecurityGroupInvalidPortValue",
            "Invalid value for port -16",
        ),
        (
            json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 79}),
            "SecurityGroupInvalidPortRange",
            "port_range_min must be <= port_range_max",
        ),
        (
            json!({"protocol": "tcp", "port_range_max": 6}),
            "SecurityGroupInvalidPortRange",
            "port_range_min must be <= port_range_max",
        ),
        (
            json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 65536}),
            "SecurityGroupInvalidPortValue",
            "Invalid value for port 65536",
        ),
        (
            json!({"port_range_min": 80, "port_range_max": 80}),
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol",
        ),
        (
            json!({"protocol": "icmp", "port_range_min": 1, "port_range_max": 256}),
            "SecurityGroupInvalidIcmpValue",
            "Invalid value for ICMP code",
        ),
        (
            json!({"protocol": "icmp", "port_range_min": 300, "port_range_max": 1}),
            "SecurityGroupInvalidIcmpValue",
            "Invalid value for ICMP type",
        ),
        (
            json!({"protocol": "icmp", "port_range_max": 6}),
            "SecurityGroupMissingIcmpType",
            "ICMP type (port-range-min) is missing",
        ),
        (
            json!({"protocol": "gre", "port_range_min": 1, "port_range_max": 2}),
            "SecurityGroupInvalidProtocolForPort",
            "Ports cannot be specified for protocol 47",
        ),
        (
            json!({"remote_ip_prefix": "192.168.1.1/33"}),
            "InvalidCIDR",
            "Invalid CIDR 192.168.1.1/33 given as IP prefix.",
        ),
        (
            json!({"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"}),
            "SecurityGroupRuleParameterConflict",
            "Conflicting value ethertype IPv6",
        ),
        (json!({"ethertype": "bad"}), "SecurityGroupRuleInvalidEtherType", "not supported"),
        (json!({"protocol": "ipv6-icmp"}), "SecurityGroupEthertypeConflictWithProtocol", "Invalid ethertype IPv4"),
        (
            json!({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": other}),
            "SecurityGroupMultipleRemoteEntites",
            "Only one of",
        ),
        (json!({"direction": "sideways"}), "HTTPBadRequest", "'sideways' is not in ['ingress', 'egress']"),
        (json!({"remote_address_group_id": "x"}), "HTTPBadRequest", "address-group extension is not enabled"),
    ];
    for (extra, want_kind, want_msg) in cases {
        let r = rule(&app, &t, base(extra.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{extra}: {}", r.body);
        assert_eq!(kind(&r), want_kind, "{extra}: {}", r.body);
        assert!(message(&r).contains(want_msg), "{extra}: {}", r.body);
    }
    for remote in ["bad_group_id", "11111111-2222-3333-4444-555555555555"] {
        let r = rule(&app, &t, base(json!({"remote_group_id": remote}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        assert_eq!(kind(&r), "SecurityGroupNotFound");
    }
    let r =
        rule(&app, &t, json!({"security_group_id": "11111111-2222-3333-4444-555555555555", "direction": "ingress"}))
            .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Canonical forms: legacy IPv6 ICMP names, the whole port range, an address as a /32.
    let r = rule(&app, &t, base(json!({"ethertype": "ipv6", "protocol": "icmpv6", "port_range_min": 128}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["security_group_rule"]["protocol"], "ipv6-icmp");
    assert_eq!(r.body["security_group_rule"]["ethertype"], "IPv6");
    let r = rule(&app, &t, base(json!({"protocol": "TCP", "port_range_min": 1, "port_range_max": 65535}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let whole = r.body["security_group_rule"].clone();
    assert_eq!((whole["protocol"].as_str(), whole["port_range_min"].is_null()), (Some("tcp"), true));
    let r = rule(&app, &t, base(json!({"protocol": "udp", "remote_ip_prefix": "10.1.2.3"}))).await;
    assert_eq!(r.body["security_group_rule"]["remote_ip_prefix"], "10.1.2.3/32");
    let r = rule(
        &app,
        &t,
        base(json!({"protocol": 17, "port_range_min": 53, "port_range_max": 53, "remote_ip_prefix": "10.1.2.3/24"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let dns = r.body["security_group_rule"].clone();
    assert_eq!(dns["protocol"], "17");
    assert_eq!(dns["remote_ip_prefix"], "10.1.2.3/24");
    assert_eq!(dns["normalized_cidr"], "10.1.2.0/24");

    // The same rule again, even spelled differently (protocol by name), is a conflict.
    let r = rule(
        &app,
        &t,
        base(json!({"protocol": "udp", "port_range_min": 53, "port_range_max": 53, "remote_ip_prefix": "10.1.2.3/24"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(kind(&r), "SecurityGroupRuleExists");
    assert_eq!(message(&r), format!("Security group rule already exists. Rule id is {}.", str_of(&dns, "id")));
    // Anywhere is the same as no prefix: the template's egress rule exists already.
    let r =
        rule(&app, &t, json!({"security_group_id": sg, "direction": "egress", "remote_ip_prefix": "0.0.0.0/0"})).await;
    assert_eq!(kind(&r), "SecurityGroupRuleExists", "{}", r.body);

    // Show equals what create answered; the group's revision moved with each rule.
    let r = call(&app, Method::GET, &t, &format!("/security-group-rules/{}", str_of(&dns, "id")), Value::Null).await;
    assert_eq!(r.body["security_group_rule"], dns);
    let r = call(&app, Method::GET, &t, &format!("/security-groups/{sg}"), Value::Null).await;
    assert_eq!(r.body["security_group"]["security_group_rules"].as_array().map(Vec::len), Some(6));
    assert_eq!(r.body["security_group"]["revision_number"], 4);
    let r = call(&app, Method::DELETE, &t, &format!("/security-group-rules/{}", str_of(&dns, "id")), Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&app, Method::GET, &t, &format!("/security-group-rules/{}", str_of(&dns, "id")), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(kind(&r), "SecurityGroupRuleNotFound");

    // Deleting a group removes rules elsewhere that name it as their peer.
    let r = rule(&app, &t, base(json!({"remote_group_id": other}))).await;
    let peer_rule = str_of(&r.body["security_group_rule"], "id").to_string();
    call(&app, Method::DELETE, &t, &format!("/security-groups/{other}"), Value::Null).await;
    let r = call(&app, Method::GET, &t, &format!("/security-group-rules/{peer_rule}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn quotas_bound_groups_and_rules() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let pid = project_id(&app, "pa").await;
    let admin = app.admin_token.clone();
    let r = call(
        &app,
        Method::PUT,
        &admin,
        &format!("/quotas/{pid}"),
        json!({"quota": {"security_group": 2, "security_group_rule": 7}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The default group (4 rules) counts; one more group (2 rules) fits, then nothing.
    let g = group(&app, &t, "one").await;
    let r = call(&app, Method::POST, &t, "/security-groups", json!({"security_group": {"name": "two"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "OverQuota");
    assert_eq!(message(&r), "Quota exceeded for resources: ['security_group'].");
    let sg = str_of(&g, "id");
    let r = rule(&app, &t, json!({"security_group_id": sg, "direction": "ingress", "protocol": "tcp"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = rule(&app, &t, json!({"security_group_id": sg, "direction": "ingress", "protocol": "udp"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(message(&r), "Quota exceeded for resources: ['security_group_rule'].");
    let r = call(&app, Method::GET, &admin, &format!("/quotas/{pid}/details"), Value::Null).await;
    assert_eq!(r.body["quota"]["security_group"], json!({"limit": 2, "used": 2, "reserved": 0}));
    assert_eq!(r.body["quota"]["security_group_rule"]["used"], 7);
}

#[tokio::test]
async fn ports_get_groups_and_port_security_guards_them() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let other = app.user_in_project("bob", "pb", "member").await;
    let net = network(&app, &t).await;
    let web = str_of(&group(&app, &t, "web").await, "id").to_string();
    let foreign = str_of(&group(&app, &other, "theirs").await, "id").to_string();

    // No groups named: the project's default group.
    let r = call(&app, Method::POST, &t, "/ports", json!({"port": {"network_id": net}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let p = r.body["port"].clone();
    let groups = call(&app, Method::GET, &t, "/security-groups?name=default", Value::Null).await;
    let default = str_of(&groups.body["security_groups"][0], "id").to_string();
    assert_eq!(p["security_groups"], json!([default]));
    let r =
        call(&app, Method::POST, &t, "/ports", json!({"port": {"network_id": net, "security_groups": [web]}})).await;
    assert_eq!(r.body["port"]["security_groups"], json!([web]));
    let web_port = str_of(&r.body["port"], "id").to_string();
    let r = call(&app, Method::POST, &t, "/ports", json!({"port": {"network_id": net, "security_groups": []}})).await;
    assert_eq!(r.body["port"]["security_groups"], json!([]));
    // Groups that do not exist, or are another project's, are not found.
    let r = call(&app, Method::POST, &t, "/ports", json!({"port": {"network_id": net, "security_groups": [foreign]}}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(kind(&r), "SecurityGroupNotFound");
    // Without port security no groups (none by default, and none may be asked for).
    let r =
        call(&app, Method::POST, &t, "/ports", json!({"port": {"network_id": net, "port_security_enabled": false}}))
            .await;
    assert_eq!(r.body["port"]["security_groups"], json!([]));
    let body = json!({"port": {"network_id": net, "port_security_enabled": false, "security_groups": [web]}});
    let r = call(&app, Method::POST, &t, "/ports", body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(kind(&r), "PortSecurityAndIPRequiredForSecurityGroups");

    // A group in use stays.
    let r = call(&app, Method::DELETE, &t, &format!("/security-groups/{web}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "SecurityGroupInUse");
    assert_eq!(message(&r), format!("Security Group {web} in use."));

    // Port security off while groups remain is refused; off and no groups in one PUT works.
    let path = format!("/ports/{web_port}");
    let r = call(&app, Method::PUT, &t, &path, json!({"port": {"port_security_enabled": false}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "PortSecurityPortHasSecurityGroup");
    let r =
        call(&app, Method::PUT, &t, &path, json!({"port": {"port_security_enabled": false, "security_groups": []}}))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["port"]["port_security_enabled"].clone(), r.body["port"]["security_groups"].clone()),
        (json!(false), json!([]))
    );
    let r =
        call(&app, Method::PUT, &t, &path, json!({"port": {"allowed_address_pairs": [{"ip_address": "10.0.0.99"}]}}))
            .await;
    assert_eq!(kind(&r), "AddressPairAndPortSecurityRequired");
    let r = call(&app, Method::PUT, &t, &path, json!({"port": {"security_groups": [web]}})).await;
    assert_eq!(kind(&r), "PortSecurityAndIPRequiredForSecurityGroups");
    // Back on with groups and a pair (its MAC defaults to the port's).
    let body = json!({"port": {"port_security_enabled": true, "security_groups": [web, default], "allowed_address_pairs": [{"ip_address": "10.0.0.0/28"}]}});
    let r = call(&app, Method::PUT, &t, &path, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut got: Vec<String> = serde_json::from_value(r.body["port"]["security_groups"].clone()).expect("ids");
    got.sort();
    let mut want = vec![web.clone(), default.clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(r.body["port"]["allowed_address_pairs"][0]["mac_address"], r.body["port"]["mac_address"]);
    // Ports list filtered by group.
    let r = call(&app, Method::GET, &t, &format!("/ports?security_groups={web}&fields=id"), Value::Null).await;
    assert_eq!(r.body["ports"], json!([{"id": web_port}]));
    // Once the port is gone, so is the group.
    call(&app, Method::DELETE, &t, &path, Value::Null).await;
    let r = call(&app, Method::DELETE, &t, &format!("/security-groups/{web}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// The port-filter feed

fn registration(host: &str) -> Value {
    json!({"host": host, "agent_version": "test", "inventory": {
        "vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "reserved_vcpus": 0, "reserved_memory_mb": 0,
        "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
        "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": true,
        "availability_zone": "nova"}})
}

/// Registers `host`: (host id, its credential).
async fn register(app: &TestApp, host: &str) -> (String, String) {
    let token = app.state.store.setting("agent_token").await.expect("setting").expect("agent token");
    let auth = format!("Bearer {token}");
    let r = app
        .call(
            Method::POST,
            "/agent/v1/register",
            None,
            &[("authorization", auth.as_str()), ("content-type", "application/json")],
            Body::from(registration(host).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (str_of(&r.body, "host_id").to_string(), str_of(&r.body, "credential").to_string())
}

async fn filters(app: &TestApp, host: &str, credential: &str, query: &str) -> Reply {
    let auth = format!("Bearer {credential}");
    app.call(
        Method::GET,
        &format!("/agent/v1/hosts/{host}/port-filters{query}"),
        None,
        &[("authorization", auth.as_str())],
        Body::empty(),
    )
    .await
}

/// An instance of project `pa` placed on `host_id`, with a port per group list given; the
/// port ids.
async fn instance_with_ports(
    app: &TestApp,
    t: &str,
    net: &str,
    host_id: &str,
    id: &str,
    ports: &[Value],
) -> Vec<String> {
    let pid = project_id(app, "pa").await;
    let inst = crate::store::instances::Instance {
        project_id: pid,
        host_id: Some(host_id.to_string()),
        ..crate::testing::instance(id)
    };
    app.state.store.create_instance(&inst, None).await.expect("instance");
    let mut out = Vec::new();
    for extra in ports {
        let mut body = json!({"network_id": net, "device_id": id, "device_owner": "compute:nova"});
        if let (Some(o), Value::Object(e)) = (body.as_object_mut(), extra.clone()) {
            o.extend(e);
        }
        let r = call(app, Method::POST, t, "/ports", json!({"port": body})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        out.push(str_of(&r.body["port"], "id").to_string());
    }
    out
}

fn port_filter<'a>(answer: &'a Value, port: &str) -> &'a Value {
    answer["ports"].as_array().and_then(|a| a.iter().find(|p| p["port_id"] == port)).expect("port in the feed")
}

#[tokio::test]
async fn port_filters_resolve_remote_groups_per_host() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let net = network(&app, &t).await;
    let (host_a, cred_a) = register(&app, "host-a").await;
    let (host_b, cred_b) = register(&app, "host-b").await;
    let web = str_of(&group(&app, &t, "web").await, "id").to_string();
    let db = str_of(&group(&app, &t, "db").await, "id").to_string();
    // db admits TCP 5432 from web's members, and SSH from one network.
    let r = rule(&app, &t, json!({"security_group_id": db, "direction": "ingress", "protocol": "tcp", "port_range_min": 5432, "port_range_max": 5432, "remote_group_id": web}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    rule(&app, &t, json!({"security_group_id": db, "direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "192.0.2.7/24"}))
        .await;
    let db_ports = instance_with_ports(&app, &t, &net, &host_a, "vm-db", &[json!({"security_groups": [db]})]).await;
    let web_ports = instance_with_ports(
        &app,
        &t,
        &net,
        &host_b,
        "vm-web",
        &[json!({"security_groups": [web], "allowed_address_pairs": [{"ip_address": "10.9.9.0/24", "mac_address": "fa:16:3e:00:00:01"}]}), json!({"port_security_enabled": false})],
    )
    .await;

    let r = filters(&app, "host-a", &cred_a, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["ports"].as_array().map(Vec::len), Some(1), "host-a has only its instance's port: {}", r.body);
    let p = port_filter(&r.body, &db_ports[0]);
    assert_eq!(p["instance_id"], "vm-db");
    assert_eq!(p["network_id"], json!(net));
    assert_eq!(p["port_security_enabled"], true);
    assert_eq!(p["fixed_ips"].as_array().map(Vec::len), Some(2), "{p}");
    let web_port =
        call(&app, Method::GET, &t, &format!("/ports/{}", web_ports[0]), Value::Null).await.body["port"].clone();
    let web_v4: Vec<String> = web_port["fixed_ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(|f| f["ip_address"].as_str())
        .filter(|a| !a.contains(':'))
        .map(str::to_string)
        .collect();
    let rules = p["rules"].as_array().expect("rules");
    let pg = |ethertype: &str| {
        rules.iter().find(|r| r["port_range_min"] == 5432 && r["ethertype"] == ethertype).expect("5432 rule").clone()
    };
    // Only db's own rules (egress both ways, 5432 by family with members resolved, 22 from a prefix).
    assert_eq!(rules.len(), 4, "{p}");
    let v4 = pg("IPv4");
    let mut want = web_v4.clone();
    want.push("10.9.9.0/24".into());
    let mut got: Vec<String> = serde_json::from_value(v4["remote"].clone()).expect("remote list");
    got.sort();
    want.sort();
    assert_eq!(got, want, "web's member addresses and its address pair");
    assert_eq!(
        (v4["protocol"].clone(), v4["direction"].clone(), v4["stateful"].clone()),
        (json!(6), json!("ingress"), json!(true))
    );
    let ssh = rules.iter().find(|r| r["port_range_min"] == 22).expect("22 rule");
    assert_eq!(ssh["remote"], json!(["192.0.2.0/24"]));
    let egress = rules.iter().find(|r| r["direction"] == "egress").expect("egress");
    assert!(egress["remote"].is_null() && egress["protocol"].is_null(), "{egress}");

    // host-b: the web port with its pair, and the port without port security (no rules).
    let r = filters(&app, "host-b", &cred_b, "").await;
    let w = port_filter(&r.body, &web_ports[0]);
    assert_eq!(w["allowed_address_pairs"], json!([{"ip_address": "10.9.9.0/24", "mac_address": "fa:16:3e:00:00:01"}]));
    let open = port_filter(&r.body, &web_ports[1]);
    assert_eq!((open["port_security_enabled"].clone(), open["rules"].clone()), (json!(false), json!([])));

    // Hosts see only their own feed.
    let r = filters(&app, "host-a", &cred_b, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = filters(&app, "host-a", "not-a-credential", "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn port_filters_long_poll_wakes_on_a_rule_change_and_not_before() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let net = network(&app, &t).await;
    let (host, cred) = register(&app, "host-a").await;
    let sg = str_of(&group(&app, &t, "web").await, "id").to_string();
    let ports = instance_with_ports(&app, &t, &net, &host, "vm-1", &[json!({"security_groups": [sg]})]).await;
    let first = filters(&app, "host-a", &cred, "").await;
    let generation = first.body["generation"].as_u64().expect("generation");
    // A stale generation answers at once, whatever the wait.
    let stale = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        filters(&app, "host-a", &cred, &format!("?after={}&wait=60", generation - 1)),
    )
    .await
    .expect("answered without waiting");
    assert_eq!(stale.body["generation"], generation);

    // The current generation waits…
    let app2 = std::sync::Arc::new(app);
    let poller = {
        let app = app2.clone();
        let cred = cred.clone();
        tokio::spawn(async move { filters(&app, "host-a", &cred, &format!("?after={generation}&wait=60")).await })
    };
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!poller.is_finished(), "the poll waits while nothing changes");
    // …until a rule changes.
    let r = rule(&app2, &t, json!({"security_group_id": sg, "direction": "ingress", "protocol": "icmp"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let woken = tokio::time::timeout(std::time::Duration::from_secs(30), poller).await.expect("woken").expect("task");
    assert_eq!(woken.status, StatusCode::OK);
    let after = woken.body["generation"].as_u64().expect("generation");
    assert_ne!(after, generation);
    let rules = port_filter(&woken.body, &ports[0])["rules"].as_array().expect("rules").clone();
    assert!(rules.iter().any(|r| r["protocol"] == 1 && r["direction"] == "ingress"), "{rules:?}");
}

/// Ports from before migration 0016 (marked `["default"]` in the old column by the migration,
/// or holding a group's name) get those groups when the store opens; names that match nothing
/// stay in the column.
#[tokio::test]
async fn ports_from_before_security_groups_are_adopted() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let net = network(&app, &t).await;
    let web = str_of(&group(&app, &t, "web").await, "id").to_string();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let r =
            call(&app, Method::POST, &t, "/ports", json!({"port": {"network_id": net, "security_groups": []}})).await;
        ports.push(str_of(&r.body["port"], "id").to_string());
    }
    let store = &app.state.store;
    for (port, legacy) in ports.iter().zip([r#"["default"]"#, r#"["web", "gone"]"#]) {
        sqlx::query("UPDATE ports SET security_groups = $2 WHERE id = $1")
            .bind(port)
            .bind(legacy)
            .execute(&mut *store.conn().await.expect("conn"))
            .await
            .expect("mark");
    }
    let before = store.filter_generation();
    assert_eq!(store.adopt_legacy_security_groups().await.expect("adopt"), 2);
    assert_ne!(store.filter_generation(), before, "agents are told");
    let default = call(&app, Method::GET, &t, "/security-groups?name=default", Value::Null).await.body["security_groups"][0]["id"].clone();
    let first = call(&app, Method::GET, &t, &format!("/ports/{}", ports[0]), Value::Null).await;
    assert_eq!(first.body["port"]["security_groups"], json!([default]));
    let second = call(&app, Method::GET, &t, &format!("/ports/{}", ports[1]), Value::Null).await;
    assert_eq!(second.body["port"]["security_groups"], json!([web]));
    let left: Vec<(String,)> =
        sqlx::query_as("SELECT security_groups FROM ports WHERE id = $1 OR id = $2 ORDER BY security_groups")
            .bind(&ports[0])
            .bind(&ports[1])
            .fetch_all(&mut *store.conn().await.expect("conn"))
            .await
            .expect("read");
    assert_eq!(
        left,
        vec![(r#"["gone"]"#.to_string(),), ("[]".to_string(),)],
        "the unknown name is kept, the rest cleared"
    );
    // Done once: nothing left to adopt but the unknown name, which stays.
    assert_eq!(store.adopt_legacy_security_groups().await.expect("again"), 0);
}
