//! The unmodified `openstack` CLI against a real server: images (upload/download byte-identical)
//! and networks, subnets, ports.

use meridian_e2e::Server;

fn names(list: &serde_json::Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|x| x["Name"].as_str().map(str::to_string)).collect()
}

#[test]
fn image_upload_list_show_save_delete() {
    let server = Server::start();
    let cli = server.admin_cli();
    let src = server.data_dir.join("disk.raw");
    // 3 MiB of non-repeating bytes, so a truncated or reordered download cannot match.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&src, &data).expect("write image");

    let created = cli.json(&[
        "image",
        "create",
        "--file",
        src.to_str().expect("path"),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--property",
        "os_distro=debian",
        "e2e-image",
    ]);
    assert_eq!(created["status"], "active", "{created}");
    let listed = cli.json(&["image", "list"]);
    assert!(names(&listed).contains(&"e2e-image".to_string()), "{listed}");
    let shown = cli.json(&["image", "show", "e2e-image"]);
    assert_eq!(shown["size"], data.len());
    assert_eq!(shown["disk_format"], "raw");
    assert!(shown.to_string().contains("os_distro"), "{shown}");

    let out = server.data_dir.join("saved.raw");
    cli.run(&["image", "save", "--file", out.to_str().expect("path"), "e2e-image"]);
    assert_eq!(std::fs::read(&out).expect("saved"), data, "downloaded image is byte-identical");

    cli.run(&["image", "delete", "e2e-image"]);
    assert!(!names(&cli.json(&["image", "list"])).contains(&"e2e-image".to_string()));
}

#[test]
fn networks_subnets_ports() {
    let server = Server::start();
    let cli = server.admin_cli();
    let net = cli.json(&["network", "create", "e2e-net"]);
    assert_eq!(net["name"], "e2e-net");
    assert!(names(&cli.json(&["network", "list"])).contains(&"e2e-net".to_string()));
    let shown = cli.json(&["network", "show", "e2e-net"]);
    assert_eq!(shown["status"], "ACTIVE");

    let sub = cli.json(&["subnet", "create", "--network", "e2e-net", "--subnet-range", "10.20.0.0/24", "e2e-sub"]);
    assert_eq!(sub["cidr"], "10.20.0.0/24");
    assert_eq!(sub["gateway_ip"], "10.20.0.1");
    let sub6 = cli.json(&[
        "subnet",
        "create",
        "--network",
        "e2e-net",
        "--ip-version",
        "6",
        "--subnet-range",
        "fd00:20::/64",
        "e2e-sub6",
    ]);
    assert_eq!(sub6["ip_version"], 6);
    let subs = cli.json(&["subnet", "list"]);
    assert!(names(&subs).contains(&"e2e-sub".to_string()), "{subs}");

    let port = cli.json(&[
        "port",
        "create",
        "--network",
        "e2e-net",
        "--fixed-ip",
        "subnet=e2e-sub,ip-address=10.20.0.50",
        "e2e-port",
    ]);
    let text = port["fixed_ips"].to_string();
    assert!(text.contains("10.20.0.50"), "{port}");
    let auto = cli.json(&["port", "create", "--network", "e2e-net", "e2e-port2"]);
    assert!(auto["mac_address"].as_str().is_some_and(|m| m.starts_with("fa:16:3e:")), "{auto}");
    let ports = cli.json(&["port", "list"]);
    let listed = names(&ports);
    assert!(listed.contains(&"e2e-port".to_string()) && listed.contains(&"e2e-port2".to_string()), "{ports}");

    // Deleting a network with a port in use by a (simulated) compute device is refused; after
    // the ports go, the network and its subnets go too.
    cli.run(&["port", "delete", "e2e-port", "e2e-port2"]);
    cli.run(&["network", "delete", "e2e-net"]);
    assert!(!names(&cli.json(&["network", "list"])).contains(&"e2e-net".to_string()));
    assert!(cli.json(&["subnet", "list"]).as_array().expect("list").is_empty());

    let quota = cli.json(&["quota", "show", "--default"]);
    assert!(quota.to_string().to_lowercase().contains("ports"), "{quota}");
}
