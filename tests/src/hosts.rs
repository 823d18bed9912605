//! Simulated compute hosts on one machine, for what needs two libvirt daemons (live
//! migration: libvirt refuses to migrate a guest to the daemon it runs on).
//!
//! A [`SimNet`] is a bridge in the machine's namespace with an address the server listens on.
//! A [`SimHost`] is a network namespace plugged into it (a veth pair) running its own
//! `libvirtd` + `virtlogd` in a private mount and UTS namespace: its own `/run/libvirt`,
//! `/var/lib/libvirt`, `/etc/libvirt` (with its own `host_uuid`, listening on TCP at the
//! host's address without authentication: a test network only) and host name. Its agent runs
//! in the namespace too (`ip netns exec`), so its guests' networks, DHCP and nftables filters
//! are the namespace's. Its daemon's socket is in the host's temp dir, visible to all.
//!
//! Dropping a host destroys its guests, kills every process in its namespace (daemons, QEMU,
//! dnsmasq, agent) and deletes it; dropping the net deletes the bridge: a failing test leaves
//! nothing behind.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(out.status.success(), "{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bridge joining this test process's simulated hosts.
pub struct SimNet {
    pub bridge: String,
    /// The first three octets of its /24 (`172.X.Y`).
    prefix: String,
}

impl SimNet {
    /// A bridge with a /24 no other test process uses; the machine's end is `.1`.
    pub fn new() -> SimNet {
        let pid = std::process::id();
        let net = SimNet {
            bridge: format!("mrdsim{}", pid % 100_000),
            prefix: format!("172.{}.{}", 16 + pid % 16, (pid / 16) % 250),
        };
        let _ = run("ip", &["link", "del", &net.bridge]);
        run_ok("ip", &["link", "add", &net.bridge, "type", "bridge"]);
        run_ok("ip", &["addr", "add", &format!("{}/24", net.gateway()), "dev", &net.bridge]);
        run_ok("ip", &["link", "set", &net.bridge, "up"]);
        net
    }

    /// The machine's address on the bridge (where a server for these hosts listens).
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// A new host on this net, `index` from 2 (its address `.index`).
    pub fn host(&self, label: &str, index: u8) -> SimHost {
        SimHost::start(self, label, index)
    }
}

impl Default for SimNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SimNet {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// A network namespace with its own libvirt daemon (see the module's comment).
pub struct SimHost {
    /// The namespace's name, also the daemon's host name.
    pub netns: String,
    pub ip: String,
    dir: tempfile::TempDir,
    /// The daemons' launcher (`tini` in the end), reaped on drop.
    daemons: Option<std::process::Child>,
}

impl SimHost {
    fn start(net: &SimNet, label: &str, index: u8) -> SimHost {
        let pid = std::process::id();
        let netns = format!("mrd{label}{}", pid % 100_000);
        let ip = format!("{}.{index}", net.prefix);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut host = SimHost { netns: netns.clone(), ip: ip.clone(), dir, daemons: None };
        let _ = run("ip", &["netns", "del", &netns]);
        run_ok("ip", &["netns", "add", &netns]);
        let outer: String = format!("{netns}h").chars().take(15).collect();
        let _ = run("ip", &["link", "del", &outer]);
        run_ok("ip", &["link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
        run_ok("ip", &["link", "set", &outer, "master", &net.bridge, "up"]);
        run_ok("ip", &["-n", &netns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        run_ok("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        run_ok("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        host.start_daemons(index);
        host
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The daemon's socket, which the agent (and a test's `virsh`) use.
    pub fn uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.root().join("sock/libvirt-sock").display())
    }

    /// Where other hosts' daemons reach this one (peer-to-peer migration).
    pub fn migration_uri(&self) -> String {
        format!("qemu+tcp://{}/system", self.ip)
    }

    /// Starts this host's agent (named `name` to the server) inside its namespace, with `extra`
    /// flags besides the ones it needs here.
    pub fn start_agent(&self, server: &crate::Server, name: &str, extra: &[&str]) -> crate::Agent {
        let migration_uri = self.migration_uri();
        let mut flags =
            vec!["--host-ip", self.ip.as_str(), "--migration-uri", &migration_uri, "--migration-address", &self.ip];
        flags.extend_from_slice(extra);
        crate::Agent::start_in(server, name, &self.uri(), &flags, Some(&self.netns))
    }

    fn start_daemons(&mut self, index: u8) {
        let r = self.root();
        for d in ["etc", "lib/qemu", "lib/dnsmasq", "lib/network", "cache", "log", "sock", "run"] {
            std::fs::create_dir_all(r.join(d)).expect("daemon dir");
        }
        // The machine's configuration (qemu.conf runs QEMU as root), without its autostarted
        // networks, and its QEMU capability cache (a new daemon probes QEMU for a long while).
        run_ok("cp", &["-a", "/etc/libvirt/.", &r.join("etc").to_string_lossy()]);
        let _ = run("sh", &["-c", &format!("rm -f {}/etc/qemu/networks/autostart/*", r.display())]);
        let _ = run("cp", &["-a", "/var/cache/libvirt/.", &r.join("cache").to_string_lossy()]);
        let conf = format!(
            "\nhost_uuid = \"6d657269-6469-616e-0000-{:012x}\"\nlisten_tls = 0\nlisten_tcp = 1\n\
             listen_addr = \"{}\"\nauth_tcp = \"none\"\nunix_sock_dir = \"{}\"\n",
            u64::from(std::process::id()) * 256 + u64::from(index),
            self.ip,
            r.join("sock").display()
        );
        let mut f = std::fs::OpenOptions::new().append(true).open(r.join("etc/libvirtd.conf")).expect("libvirtd.conf");
        std::io::Write::write_all(&mut f, conf.as_bytes()).expect("write libvirtd.conf");
        let script = format!(
            "hostname {ns}\n\
             mount -t tmpfs tmpfs /run/libvirt\n\
             mount --bind {r}/etc /etc/libvirt\n\
             mount --bind {r}/lib /var/lib/libvirt\n\
             mount --bind {r}/cache /var/cache/libvirt\n\
             mount --bind {r}/log /var/log/libvirt\n\
             exec setsid tini -s -- sh -c 'virtlogd -d -p {r}/run/virtlogd.pid; exec libvirtd --listen -p {r}/run/libvirtd.pid'",
            ns = self.netns,
            r = r.display()
        );
        let log = std::fs::File::create(r.join("daemons.log")).expect("daemon log");
        let err = log.try_clone().expect("daemon log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c"])
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start the host's libvirtd");
        self.daemons = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if self.virsh(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the libvirtd of {} did not answer within 90 s:\n{}",
                self.netns,
                std::fs::read_to_string(r.join("daemons.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `virsh` on this host's daemon.
    pub fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh").arg("-c").arg(self.uri()).args(args).output().expect("run virsh")
    }

    /// `virsh` stdout on this host's daemon, panicking on failure.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(out.status.success(), "virsh {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The names of the domains defined on this host.
    pub fn domains(&self) -> Vec<String> {
        self.virsh_ok(&["list", "--all", "--name"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        for d in self.virsh(&["list", "--all", "--name"]).stdout.split(|b| *b == b'\n') {
            let d = String::from_utf8_lossy(d).trim().to_string();
            if !d.is_empty() {
                let _ = self.virsh(&["destroy", &d]);
                let _ = self.virsh(&["undefine", &d]);
            }
        }
        // Everything still running in the namespace: the daemons, QEMU, dnsmasq, the agent.
        let pids = run("ip", &["netns", "pids", &self.netns]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
        if let Some(mut c) = self.daemons.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run("ip", &["netns", "del", &self.netns]);
        let outer: String = format!("{}h", self.netns).chars().take(15).collect();
        let _ = run("ip", &["link", "del", &outer]);
    }
}
