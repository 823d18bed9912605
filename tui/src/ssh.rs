//! SSH into an instance from the dashboard: which address, which login user, which key, and
//! the system `ssh` command line. The event loop runs it with the terminal handed over
//! ([`SshCall`] is what the app asks for; `main.rs` suspends the dashboard around it).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One ssh run the app asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshCall {
    pub server_name: String,
    pub user: String,
    pub address: String,
    /// The cloud's name (generated keys are kept per cloud).
    pub cloud: String,
    /// The instance's key pair.
    pub keypair: Option<String>,
    /// The dashboard-generated private key of that key pair, once [`SshCall::find_key`] found it.
    pub key: Option<PathBuf>,
}

impl SshCall {
    /// Looks for the key pair's generated private key under `keys_dir` (run by the event loop,
    /// not the update path: it touches the disk).
    pub fn find_key(&mut self, keys_dir: &Path) {
        self.key = self.keypair.as_deref().map(|k| key_path(keys_dir, &self.cloud, k)).filter(|p| p.is_file());
    }

    /// The arguments after `ssh`.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(k) = &self.key {
            a.push("-i".into());
            a.push(k.display().to_string());
            // Only this key: an agent full of others can exhaust the server's MaxAuthTries.
            a.push("-o".into());
            a.push("IdentitiesOnly=yes".into());
        }
        a.push("-o".into());
        a.push("StrictHostKeyChecking=accept-new".into());
        a.push(format!("{}@{}", self.user, self.address));
        a
    }

    /// The command as a user would type it (status line, log).
    pub fn display(&self) -> String {
        format!("ssh {}", self.args().join(" "))
    }
}

/// The address to reach a server at: a floating IP when it has one, else a fixed one; IPv4
/// before IPv6 within each.
pub fn address(server_raw: &Value) -> Option<String> {
    let mut all: Vec<(bool, bool, String)> = Vec::new();
    for list in server_raw["addresses"].as_object().into_iter().flat_map(|m| m.values()) {
        for a in list.as_array().into_iter().flatten() {
            let Some(addr) = a["addr"].as_str() else { continue };
            let floating = a["OS-EXT-IPS:type"].as_str() == Some("floating");
            let v4 = a["version"].as_u64().map_or(!addr.contains(':'), |v| v == 4);
            all.push((!floating, !v4, addr.to_string()));
        }
    }
    // `accessIPv4` is what some clouds set instead of a floating IP.
    if let Some(ip) = server_raw["accessIPv4"].as_str().filter(|s| !s.is_empty()) {
        all.push((false, false, ip.to_string()));
    }
    all.sort();
    all.into_iter().next().map(|(_, _, a)| a)
}

/// The image's login user: its `os_admin_user` property, else the distribution's usual cloud
/// user from `os_distro` (the values of the OpenStack image metadata spec). `None`: ask.
pub fn login_user(image_raw: &Value) -> Option<String> {
    let prop = |k: &str| {
        image_raw[k]
            .as_str()
            .or_else(|| image_raw["properties"][k].as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(u) = prop("os_admin_user") {
        return Some(u);
    }
    let user = match prop("os_distro")?.to_ascii_lowercase().as_str() {
        "ubuntu" => "ubuntu",
        "debian" => "debian",
        "fedora" | "fedora-coreos" => "fedora",
        "centos" | "rhel" => "cloud-user",
        "rocky" => "rocky",
        "almalinux" => "almalinux",
        "opensuse" | "sles" => "opensuse",
        "arch" => "arch",
        "freebsd" => "freebsd",
        "cirros" => "cirros",
        // Meridian's own guest image (scripts/build-image.sh): busybox with dropbear for root.
        "busybox" | "meridian" => "root",
        _ => return None,
    };
    Some(user.to_string())
}

/// Where the dashboard keeps the private keys it generated: `<data dir>/keys/<cloud>/<key pair>`
/// (`MERIDIAN_DATA_DIR` replaces the data dir).
pub fn keys_dir(data_dir_override: Option<PathBuf>) -> PathBuf {
    data_dir_override
        .or_else(|| directories::ProjectDirs::from("", "", "meridian").map(|p| p.data_dir().to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(".meridian"))
        .join("keys")
}

/// The file of one generated key (names are made safe as one path segment each).
pub fn key_path(keys_dir: &Path, cloud: &str, keypair: &str) -> PathBuf {
    keys_dir.join(segment(cloud)).join(segment(keypair))
}

fn segment(s: &str) -> String {
    let t: String = s.chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    if t.is_empty() || t.starts_with('.') { format!("_{t}") } else { t }
}

/// The key directory the running process uses.
pub fn default_keys_dir() -> PathBuf {
    keys_dir(std::env::var_os("MERIDIAN_DATA_DIR").map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floating_before_fixed_and_v4_before_v6() {
        let s = json!({"addresses": {"net": [
            {"addr": "fd00::5", "version": 6, "OS-EXT-IPS:type": "fixed"},
            {"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
            {"addr": "203.0.113.9", "version": 4, "OS-EXT-IPS:type": "floating"},
        ]}});
        assert_eq!(address(&s).as_deref(), Some("203.0.113.9"));
        let s = json!({"addresses": {"net": [
            {"addr": "fd00::5", "version": 6, "OS-EXT-IPS:type": "fixed"},
            {"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
        ]}});
        assert_eq!(address(&s).as_deref(), Some("10.0.0.5"));
        assert_eq!(address(&json!({"addresses": {}})), None);
    }

    #[test]
    fn login_user_from_the_image() {
        assert_eq!(login_user(&json!({"os_admin_user": "admin", "os_distro": "ubuntu"})).as_deref(), Some("admin"));
        assert_eq!(login_user(&json!({"os_distro": "ubuntu"})).as_deref(), Some("ubuntu"));
        assert_eq!(login_user(&json!({"os_distro": "debian"})).as_deref(), Some("debian"));
        assert_eq!(login_user(&json!({"os_distro": "centos"})).as_deref(), Some("cloud-user"));
        assert_eq!(login_user(&json!({"os_distro": "rocky"})).as_deref(), Some("rocky"));
        assert_eq!(login_user(&json!({"os_distro": "fedora"})).as_deref(), Some("fedora"));
        assert_eq!(login_user(&json!({"os_distro": "cirros"})).as_deref(), Some("cirros"));
        assert_eq!(login_user(&json!({"os_distro": "busybox"})).as_deref(), Some("root"));
        // Older Glance v1-style images keep them under "properties".
        assert_eq!(login_user(&json!({"properties": {"os_distro": "Ubuntu"}})).as_deref(), Some("ubuntu"));
        assert_eq!(login_user(&json!({"os_distro": "plan9"})), None);
        assert_eq!(login_user(&json!({})), None);
    }

    #[test]
    fn command_line_with_and_without_a_generated_key() {
        let mut call = SshCall {
            server_name: "web1".into(),
            user: "ubuntu".into(),
            address: "10.0.0.5".into(),
            cloud: "dev".into(),
            keypair: Some("k1".into()),
            key: None,
        };
        // No generated key on disk: no -i.
        let dir = tempfile::tempdir().expect("tmp");
        call.find_key(dir.path());
        assert_eq!(call.key, None);
        assert_eq!(call.display(), "ssh -o StrictHostKeyChecking=accept-new ubuntu@10.0.0.5");
        let key = key_path(dir.path(), "dev", "k1");
        crate::keys::save_private_key(&key, "secret").expect("save");
        call.find_key(dir.path());
        assert_eq!(call.key.as_deref(), Some(key.as_path()));
        let shown = key.display().to_string();
        assert_eq!(
            call.args(),
            [
                "-i",
                shown.as_str(),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "ubuntu@10.0.0.5"
            ]
        );
    }

    #[test]
    fn key_paths_stay_inside_the_keys_dir() {
        let d = Path::new("/data/keys");
        assert_eq!(key_path(d, "dev", "k1"), Path::new("/data/keys/dev/k1"));
        assert_eq!(key_path(d, "dev", "../x"), Path::new("/data/keys/dev/_.._x"));
        assert_eq!(key_path(d, "a/b", "my key"), Path::new("/data/keys/a_b/my key"));
        assert_eq!(keys_dir(Some(PathBuf::from("/d"))), Path::new("/d/keys"));
    }
}
