//! Helpers for the real-VM tier and benchmark: the guest image, `virsh` on `qemu:///system`,
//! a guard that removes every domain and network a test made, and reading guest banners.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meridian_common::Client;
use serde_json::{Value, json};

pub const URI: &str = "qemu:///system";

/// The banner line the guest image prints once it is up (see scripts/build-image.sh).
pub const READY: &str = "meridian-guest: ready ";

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Whether the real-VM tier runs. `MERIDIAN_SKIP_REAL_VM=1` skips it (loudly, and
/// `scripts/test.sh` names the skip in its closing lines) but never under CI, where the tier
/// must run; otherwise `qemu:///system` must answer, since `scripts/deps.sh` starts it.
pub fn enabled(test: &str) -> bool {
    if std::env::var("MERIDIAN_SKIP_REAL_VM").is_ok_and(|v| v == "1") {
        assert!(!under_ci(), "MERIDIAN_SKIP_REAL_VM=1 is refused under CI: the real-VM tier must run there ({test})");
        eprintln!("\n!!!!!!!! SKIPPED real-VM test {test}: MERIDIAN_SKIP_REAL_VM=1 !!!!!!!!\n");
        return false;
    }
    let out = virsh(&["version"]);
    assert!(
        out.status.success(),
        "{URI} does not answer ({}); scripts/deps.sh (scripts/libvirt.sh) starts it, \
         or set MERIDIAN_SKIP_REAL_VM=1 to skip this tier",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    true
}

/// Whether this is a CI run (`CI` set and not empty, as CI services set it).
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// `virsh -c qemu:///system ARGS`.
pub fn virsh(args: &[&str]) -> Output {
    Command::new("virsh").arg("-c").arg(URI).args(args).output().expect("run virsh")
}

/// `virsh` stdout, panicking on failure.
pub fn virsh_ok(args: &[&str]) -> String {
    let out = virsh(args);
    assert!(out.status.success(), "virsh {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The guest image directory (`disk.qcow2`, `vmlinuz`, `initrd.img`), built once and cached.
pub fn image_dir() -> PathBuf {
    let out = Command::new(root().join("scripts/build-image.sh")).output().expect("run scripts/build-image.sh");
    assert!(out.status.success(), "scripts/build-image.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().expect("the image directory").trim())
}

/// Removes, when dropped, every libvirt domain and network registered with it, so a failing
/// test leaves nothing running. Register names as soon as they are known.
#[derive(Default)]
pub struct LibvirtGuard {
    domains: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
}

impl LibvirtGuard {
    pub fn domain(&self, name: &str) {
        self.domains.lock().expect("lock").push(name.to_string());
    }
    pub fn network(&self, name: &str) {
        self.networks.lock().expect("lock").push(name.to_string());
    }
}

impl Drop for LibvirtGuard {
    fn drop(&mut self) {
        let domains = std::mem::take(&mut *self.domains.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for d in domains {
            let _ = virsh(&["destroy", &d]);
            let _ = virsh(&["undefine", &d, "--nvram"]);
        }
        let networks = std::mem::take(&mut *self.networks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for n in networks {
            let _ = virsh(&["net-destroy", &n]);
            let _ = virsh(&["net-undefine", &n]);
        }
    }
}

/// A /24 for this process's test network that other test processes (other pids) do not use.
pub fn private_subnet(salt: u32) -> String {
    let pid = std::process::id().wrapping_add(salt.wrapping_mul(7919));
    format!("10.{}.{}.0/24", 100 + pid % 100, (pid / 100) % 250)
}

/// Uploads `file` as a public image and returns its id.
pub async fn upload_image(admin: &Client, name: &str, file: &Path, disk_format: &str, properties: Value) -> String {
    let container = if matches!(disk_format, "aki" | "ari") { disk_format } else { "bare" };
    let mut body =
        json!({"name": name, "disk_format": disk_format, "container_format": container, "visibility": "public"});
    if let (Some(b), Some(p)) = (body.as_object_mut(), properties.as_object()) {
        b.extend(p.clone());
    }
    let img = admin.post("image", "/v2/images", &body).await.expect("create image");
    let id = img["id"].as_str().expect("image id").to_string();
    crate::upload_image_data(admin, &id, std::fs::read(file).expect("read image file")).await;
    id
}

/// A network with a DHCP subnet on `cidr`; returns (network id, subnet id).
pub async fn network(client: &Client, name: &str, cidr: &str) -> (String, String) {
    let net = client.post("network", "/v2.0/networks", &json!({"network": {"name": name}})).await.expect("network");
    let net_id = net["network"]["id"].as_str().expect("id").to_string();
    let sub = client
        .post(
            "network",
            "/v2.0/subnets",
            &json!({"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4, "name": format!("{name}-sub")}}),
        )
        .await
        .expect("subnet");
    (net_id, sub["subnet"]["id"].as_str().expect("id").to_string())
}

/// The whole console log through the API (`os-getConsoleOutput`).
pub async fn console(client: &Client, server_id: &str) -> String {
    let r = client
        .post("compute", &format!("/servers/{server_id}/action"), &json!({"os-getConsoleOutput": {}}))
        .await
        .expect("console output");
    r["output"].as_str().unwrap_or_default().to_string()
}

/// Polls the console (through the API) until `pred` holds; panics with the log after `secs`.
pub async fn wait_console(client: &Client, server_id: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = console(client, server_id).await;
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "server {server_id}: the console never showed what was awaited:\n{}",
            story(&text)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many times the guest reached its banner.
pub fn boots(console: &str) -> usize {
    console.lines().filter(|l| l.contains(READY)).count()
}

/// What a failing assertion should show of a console log: the guest's own lines (the boot
/// log before them is long and a CI report keeps only its head) and the log's last lines.
pub fn story(console: &str) -> String {
    let ours: Vec<&str> = console.lines().filter(|l| l.contains("meridian-guest:")).collect();
    let all: Vec<&str> = console.lines().collect();
    let tail = &all[all.len().saturating_sub(15)..];
    format!("guest lines:\n{}\nlast console lines:\n{}", ours.join("\n"), tail.join("\n"))
}

/// The value of `key=` on the last banner line, e.g. `banner_field(log, "ip")`.
pub fn banner_field(console: &str, key: &str) -> Option<String> {
    let line = console.lines().rev().find(|l| l.contains(READY))?;
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// The PID of a running domain's QEMU process (libvirt's pid file), if it runs.
pub fn qemu_pid(domain: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/run/libvirt/qemu/{domain}.pid")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// The caller's project's `default` security group (Neutron makes it on first use). Only its
/// own members reach a guest in it: a test that reaches a guest from the host adds a rule.
pub async fn default_group(client: &Client) -> String {
    let project = client.session.project_id().expect("a project-scoped token").to_string();
    let groups = client
        .get("network", &format!("/v2.0/security-groups?name=default&project_id={project}"))
        .await
        .expect("security groups");
    let found = groups["security_groups"].as_array().into_iter().flatten().find(|g| g["project_id"] == project);
    found.and_then(|g| g["id"].as_str()).expect("the project's default group").to_string()
}

/// Adds an IPv4 ingress rule to `group` through the Neutron API: `protocol` (`tcp`, `icmp`, …)
/// to `port` (every port when `None`) from `remote` (a prefix); returns the rule's id.
pub async fn allow_ingress(client: &Client, group: &str, protocol: &str, port: Option<u16>, remote: &str) -> String {
    let rule = json!({"security_group_rule": {
        "security_group_id": group, "direction": "ingress", "ethertype": "IPv4", "protocol": protocol,
        "port_range_min": port, "port_range_max": port, "remote_ip_prefix": remote,
    }});
    let r = client.post("network", "/v2.0/security-group-rules", &rule).await.expect("security group rule");
    r["security_group_rule"]["id"].as_str().expect("rule id").to_string()
}

/// A subnet's gateway address: the host's own address on the guests' network (the bridge's),
/// so the source of whatever the host sends to its guests there.
pub async fn gateway(client: &Client, subnet_id: &str) -> String {
    let subnet = client.get("network", &format!("/v2.0/subnets/{subnet_id}")).await.expect("subnet");
    subnet["subnet"]["gateway_ip"].as_str().expect("gateway").to_string()
}

/// Lets the host ssh into the guests of `client`'s project on `subnet_id`: an ingress rule for
/// tcp/22 from the subnet's gateway (the host's address there) in the project's default group.
pub async fn allow_ssh_from_host(client: &Client, subnet_id: &str) {
    let gw = gateway(client, subnet_id).await;
    let group = default_group(client).await;
    allow_ingress(client, &group, "tcp", Some(22), &format!("{gw}/32")).await;
}

/// The rig of the boot-from-volume tests: a server and one agent on `qemu:///system`, a flavor
/// without a root disk, the guest image, a private network and a 1 GB bootable volume made
/// from the image (available). Fields drop in order: the guard last, once the processes are
/// gone, so it removes whatever they left.
pub struct BfvRig {
    pub admin: Client,
    pub agent: crate::Agent,
    pub server: crate::Server,
    pub flavor: String,
    pub image_id: String,
    pub net_id: String,
    /// The volume, and how it showed once available.
    pub vid: String,
    pub volume: Value,
    pub guard: LibvirtGuard,
}

impl BfvRig {
    /// `tag` names the rig's host, flavor and network (`bfv` → host `bfv-PID`, flavor
    /// `bfv.small`, network `bfvnet`); `salt` picks its subnet.
    pub async fn start(tag: &str, salt: u32, secs: u64) -> BfvRig {
        let image = image_dir();
        let guard = LibvirtGuard::default();
        let server = crate::Server::start();
        let agent = crate::Agent::start_opts(
            &server,
            &format!("{tag}-{}", std::process::id()),
            URI,
            &["--stop-timeout-secs", "60"],
        );
        let admin = server.admin().await;
        crate::wait_hosts_up(&admin, 1).await;
        // No root disk: a volume-backed server needs none.
        let body = json!({"flavor": {"name": format!("{tag}.small"), "ram": 256, "vcpus": 1, "disk": 0}});
        let flavor = admin.post("compute", "/flavors", &body).await.expect("flavor")["flavor"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let image_id = upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
        let (net_id, _) = network(&admin, &format!("{tag}net"), &private_subnet(salt)).await;
        guard.network(&format!("meridian-{net_id}"));
        let body = json!({"volume": {"size": 1, "name": "root", "imageRef": image_id}});
        let vid = admin.post("block-storage", "/volumes", &body).await.expect("volume")["volume"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let volume = crate::wait_volume(&admin, &vid, "available", secs).await;
        BfvRig { admin, agent, server, flavor, image_id, net_id, vid, volume, guard }
    }

    /// Boots `name` from volume `vid` (kept on termination) running `script` as user data; the
    /// guard learns its domain.
    pub async fn boot_from(&self, name: &str, vid: &str, script: &str) -> String {
        use base64::Engine as _;
        let body = json!({"server": {
            "name": name, "imageRef": "", "flavorRef": self.flavor, "networks": [{"uuid": self.net_id}],
            "block_device_mapping_v2": [{
                "uuid": vid, "source_type": "volume", "destination_type": "volume",
                "boot_index": 0, "delete_on_termination": false,
            }],
            "user_data": base64::engine::general_purpose::STANDARD.encode(script),
        }});
        let r = self.admin.post("compute", "/servers", &body).await.expect("boot");
        let id = r["server"]["id"].as_str().expect("id").to_string();
        self.guard.domain(&format!("meridian-{id}"));
        id
    }
}

/// A token unique to this run (`{tag}-token-…`) and the guest scripts that write it to the boot
/// volume's FAT boot partition (echoing `{tag}-written`) and read it back (`{tag}-read TOKEN`):
/// the guest runs from its initramfs, so that partition is the file system it can write.
pub fn boot_volume_token(tag: &str) -> (String, String, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let token = format!("{tag}-token-{nanos:x}{:x}", std::process::id());
    let mount = "mkdir -p /mnt/boot && mount -t vfat /dev/vda1 /mnt/boot";
    let writer = format!(
        "#!/bin/sh\n{mount} && printf '%s\\n' '{token}' > /mnt/boot/token.txt && umount /mnt/boot && sync \
         && echo '{tag}-written'\n"
    );
    let reader = format!("#!/bin/sh\n{mount} && echo \"{tag}-read $(cat /mnt/boot/token.txt)\"\n");
    (token, writer, reader)
}
