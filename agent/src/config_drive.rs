//! Config drives: the instance's metadata and user data on a small disk labelled `config-2`,
//! in Nova's layout (`openstack/<version>/…` for every dated version and `latest`,
//! `ec2/2009-04-04/…` and `ec2/latest/…`), so cloud-init and simple guests read it the way they
//! do on OpenStack. The files come from `meridian_common::metadata`, the generator behind the
//! server's metadata service too, so the drive and the service say the same.
//!
//! Formats follow Nova's `config_drive_format`: `iso9660` (made by `genisoimage`, `mkisofs` or
//! `xorriso -as mkisofs`, whichever is installed) or `vfat` (`mkfs.vfat` + `mcopy`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use meridian_common::agent::BuildSpec;
use meridian_common::metadata::Metadata;
use tokio::process::Command;
use uuid::Uuid;

/// The filesystem label guests look for.
pub const LABEL: &str = "config-2";

/// The drive's filesystem, as Nova's `config_drive_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Iso9660,
    Vfat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("user_data is not valid base64")]
    UserData(#[source] base64::DecodeError),
    #[error("cannot write the config drive's files")]
    Io(#[source] std::io::Error),
    #[error("no ISO 9660 tool found (genisoimage, mkisofs or xorriso)")]
    NoIsoTool,
    #[error("cannot run {tool}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Tool { tool: String, stderr: String },
}

/// What goes on the drive besides the build spec.
#[derive(Clone, Debug)]
pub struct DriveContext<'a> {
    pub instance_id: Uuid,
    pub availability_zone: &'a str,
}

/// The instance's metadata as the drive carries it.
pub fn metadata(ctx: &DriveContext<'_>, spec: &BuildSpec) -> Result<Metadata, ConfigDriveError> {
    Metadata::from_build_spec(&ctx.instance_id.to_string(), ctx.availability_zone, spec)
        .map_err(ConfigDriveError::UserData)
}

/// Builds the drive for `spec` at `out` (replacing any earlier one). `scratch` is a directory
/// the file tree is staged in; it is removed afterwards.
pub async fn build(
    ctx: &DriveContext<'_>,
    spec: &BuildSpec,
    format: Format,
    scratch: &Path,
    out: &Path,
) -> Result<(), ConfigDriveError> {
    let md = metadata(ctx, spec)?;
    let _ = tokio::fs::remove_dir_all(scratch).await;
    for (path, body) in md.config_drive_files() {
        let file = scratch.join(&path);
        if let Some(dir) = file.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(ConfigDriveError::Io)?;
        }
        tokio::fs::write(&file, body).await.map_err(ConfigDriveError::Io)?;
    }
    // `disk.config.part`, not `with_extension`: that would be `disk.tmp`, the overlay's own
    // temporary file, which is being written at the same time.
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    let _ = tokio::fs::remove_file(&tmp).await;
    let made = match format {
        Format::Iso9660 => make_iso(scratch, &tmp).await,
        Format::Vfat => make_vfat(scratch, &tmp).await,
    };
    let _ = tokio::fs::remove_dir_all(scratch).await;
    if let Err(e) = made {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, out).await.map_err(ConfigDriveError::Io)
}

async fn run(tool: &str, args: &[&OsStr], env: &[(&str, &str)]) -> Result<(), ConfigDriveError> {
    let out = Command::new(tool)
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ConfigDriveError::Spawn { tool: tool.to_string(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ConfigDriveError::Tool {
            tool: tool.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        })
    }
}

/// The first of `names` found on `PATH`.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| std::env::split_paths(&path).map(|d| d.join(n)).find(|p| p.is_file()))
}

/// Nova's mkisofs flags: Rock Ridge + Joliet, lower case and multi-dot names kept.
async fn make_iso(tree: &Path, out: &Path) -> Result<(), ConfigDriveError> {
    let tool = which(&["genisoimage", "mkisofs", "xorriso"]).ok_or(ConfigDriveError::NoIsoTool)?;
    let mut args: Vec<&OsStr> = Vec::new();
    if tool.file_name().is_some_and(|n| n == "xorriso") {
        args.extend(["-as", "mkisofs"].map(OsStr::new));
    }
    args.extend([OsStr::new("-o"), out.as_os_str()]);
    args.extend(
        ["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-publisher", "Meridian", "-quiet", "-J", "-r", "-V"]
            .map(OsStr::new),
    );
    args.extend([OsStr::new(LABEL), tree.as_os_str()]);
    run(&tool.to_string_lossy(), &args, &[]).await
}

/// A 64 MiB FAT filesystem (Nova's size) filled by mtools, so nothing is mounted.
async fn make_vfat(tree: &Path, out: &Path) -> Result<(), ConfigDriveError> {
    let f = tokio::fs::File::create(out).await.map_err(ConfigDriveError::Io)?;
    f.set_len(64 << 20).await.map_err(ConfigDriveError::Io)?;
    drop(f);
    run("mkfs.vfat", &[OsStr::new("-n"), OsStr::new(LABEL), out.as_os_str()], &[]).await?;
    let (openstack, ec2) = (tree.join("openstack"), tree.join("ec2"));
    let mut image = std::ffi::OsString::from("-i");
    image.push(out.as_os_str());
    // mtools refuses images whose geometry it does not like unless told not to check.
    let args = [OsStr::new("-s"), image.as_os_str(), openstack.as_os_str(), ec2.as_os_str(), OsStr::new("::/")];
    run("mcopy", &args, &[("MTOOLS_SKIP_CHECK", "1")]).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use meridian_common::agent::{FixedIp, FlavorSpec, ImageSpec, NicSpec};
    use serde_json::Value;

    use super::*;

    fn spec() -> BuildSpec {
        BuildSpec {
            name: "web one".into(),
            hostname: "web-one".into(),
            flavor: FlavorSpec {
                name: "m1.tiny".into(),
                vcpus: 1,
                ram_mb: 256,
                disk_gb: 1,
                ephemeral_gb: 0,
                swap_mb: 0,
                extra_specs: BTreeMap::new(),
            },
            image: ImageSpec {
                id: "img".into(),
                size: 1,
                checksum: String::new(),
                disk_format: "qcow2".into(),
                properties: BTreeMap::new(),
            },
            nics: vec![NicSpec {
                port_id: "0123456789abcdef".into(),
                mac_address: "FA:16:3E:00:00:01".into(),
                network_id: "net-1".into(),
                mtu: 1450,
                ips: vec![FixedIp {
                    address: "10.0.0.5".into(),
                    cidr: "10.0.0.0/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    dns_nameservers: vec!["9.9.9.9".into()],
                }],
            }],
            user_data: Some(base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho hi\n")),
            metadata: BTreeMap::from([("role".to_string(), "db".to_string())]),
            public_key: Some("ssh-ed25519 AAAA test".into()),
            key_name: Some("mykey".into()),
            project_id: "p1".into(),
            reservation_id: "r-abc12345".into(),
            launch_index: 0,
            config_drive: false,
            security_groups: vec!["web".into()],
            block_devices: Vec::new(),
            local_disks: None,
        }
    }

    #[test]
    fn meta_data_has_novas_keys_and_keys_by_name() {
        let id = Uuid::parse_str("0e7c1c1e-1111-4222-8333-444455556666").expect("uuid");
        let md = metadata(&DriveContext { instance_id: id, availability_zone: "az1" }, &spec()).expect("metadata");
        let m = md.meta_data("2025-04-04");
        assert_eq!(m["uuid"], "0e7c1c1e-1111-4222-8333-444455556666");
        assert_eq!(m["hostname"], "web-one");
        assert_eq!(m["name"], "web one");
        assert_eq!(m["availability_zone"], "az1");
        assert_eq!(m["meta"]["role"], "db");
        assert_eq!(m["public_keys"]["mykey"], "ssh-ed25519 AAAA test");
        assert_eq!(m["keys"][0]["name"], "mykey");
        assert_eq!(m["keys"][0]["data"], "ssh-ed25519 AAAA test");
        let n = md.network_data();
        assert_eq!(n["links"][0]["ethernet_mac_address"], "fa:16:3e:00:00:01");
        assert_eq!(n["networks"][0]["ip_address"], "10.0.0.5");
    }

    /// EC2 `block-device-mapping` as Nova's `instance_block_mapping` answers it: device paths,
    /// the disks where the agent lays them out, volumes as `ebs<N>`.
    #[test]
    fn ec2_block_device_mapping_follows_the_disk_layout() {
        let ctx = DriveContext { instance_id: Uuid::nil(), availability_zone: "nova" };
        let bdm = |s: &BuildSpec, key: &str| {
            let md = metadata(&ctx, s).expect("metadata");
            let a = md.lookup(&format!("/latest/meta-data/block-device-mapping/{key}")).map(|a| a.body);
            a.map(|b| String::from_utf8(b).expect("utf-8"))
        };
        let mut s = spec();
        assert_eq!(bdm(&s, "").as_deref(), Some("ami\nroot"));
        s.flavor.ephemeral_gb = 1;
        s.flavor.swap_mb = 512;
        assert_eq!(bdm(&s, "").as_deref(), Some("ami\nephemeral0\nroot\nswap"));
        assert_eq!(bdm(&s, "ephemeral0").as_deref(), Some("/dev/vdb"));
        assert_eq!(bdm(&s, "swap").as_deref(), Some("/dev/vdc"));

        // The server's own mappings replace the flavor's disks.
        s.local_disks = Some(meridian_common::agent::LocalDisks {
            ephemerals: vec![
                meridian_common::agent::EphemeralDisk { size_gb: 1, guest_format: None },
                meridian_common::agent::EphemeralDisk { size_gb: 2, guest_format: Some("xfs".into()) },
            ],
            swap_mb: 0,
        });
        let volume = |device: &str| meridian_common::agent::BlockDevice {
            volume: meridian_common::agent::VolumeSpec { id: device.into(), size_gb: 1, readonly: false },
            device: device.into(),
            boot_index: None,
            attachment_id: String::new(),
        };
        s.block_devices = vec![volume("vde"), volume("vdd")];
        assert_eq!(bdm(&s, "").as_deref(), Some("ami\nebs0\nebs1\nephemeral0\nephemeral1\nroot"));
        assert_eq!(bdm(&s, "ephemeral1").as_deref(), Some("/dev/vdc"));
        assert_eq!(bdm(&s, "swap"), None);
        assert_eq!(bdm(&s, "ebs0").as_deref(), Some("/dev/vdd"));
        assert_eq!(bdm(&s, "ebs1").as_deref(), Some("/dev/vde"));

        // On a SCSI root disk the local disks follow it on that bus.
        s.image.properties.insert("hw_disk_bus".into(), "scsi".into());
        assert_eq!(bdm(&s, "root").as_deref(), Some("/dev/sda"));
        assert_eq!(bdm(&s, "ephemeral0").as_deref(), Some("/dev/sdb"));
    }

    #[test]
    fn bad_user_data_is_an_error_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec();
        s.user_data = Some("%%%".into());
        let ctx = DriveContext { instance_id: Uuid::nil(), availability_zone: "nova" };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let out = dir.path().join("disk.config");
        let r = rt.block_on(build(&ctx, &s, Format::Iso9660, &dir.path().join("tree"), &out));
        assert!(matches!(r, Err(ConfigDriveError::UserData(_))), "{r:?}");
        assert!(!out.exists());
    }

    /// Reads one file back out of a built drive with the format's own tools (isoinfo from
    /// genisoimage, mtype from mtools), so the drive is checked as a guest would see it.
    fn read_back(format: Format, drive: &Path, file: &str) -> String {
        let out = match format {
            Format::Iso9660 => {
                std::process::Command::new("isoinfo").args(["-R", "-i"]).arg(drive).args(["-x", file]).output()
            }
            Format::Vfat => std::process::Command::new("mtype")
                .arg("-i")
                .arg(drive)
                .arg(format!("::{file}"))
                .env("MTOOLS_SKIP_CHECK", "1")
                .output(),
        }
        .expect("run the reader");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn label(format: Format, drive: &Path) -> String {
        let out = match format {
            Format::Iso9660 => std::process::Command::new("isoinfo").args(["-d", "-i"]).arg(drive).output(),
            Format::Vfat => std::process::Command::new("mlabel")
                .args(["-s", "-i"])
                .arg(drive)
                .arg("::")
                .env("MTOOLS_SKIP_CHECK", "1")
                .output(),
        }
        .expect("run the label reader");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn drives_carry_novas_tree_in_both_formats() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        for format in [Format::Iso9660, Format::Vfat] {
            let dir = tempfile::tempdir().expect("tempdir");
            let id = Uuid::new_v4();
            let ctx = DriveContext { instance_id: id, availability_zone: "nova" };
            let out = dir.path().join("disk.config");
            rt.block_on(build(&ctx, &spec(), format, &dir.path().join("tree"), &out)).expect("build");
            assert!(!dir.path().join("tree").exists());
            assert!(label(format, &out).to_ascii_lowercase().contains(LABEL), "{format:?}: no config-2 label");
            let json = |file: &str| -> Value { serde_json::from_str(&read_back(format, &out, file)).expect("json") };
            let meta = json("/openstack/latest/meta_data.json");
            assert_eq!(meta["uuid"], id.to_string(), "{format:?}");
            assert_eq!(meta["meta"]["role"], "db");
            assert_eq!(meta["public_keys"]["mykey"], "ssh-ed25519 AAAA test", "{format:?}: keyed by the key's name");
            let seed = meta["random_seed"].as_str().expect("random_seed");
            assert_eq!(base64::engine::general_purpose::STANDARD.decode(seed).expect("base64").len(), 512);
            assert_eq!(read_back(format, &out, "/openstack/latest/user_data"), "#!/bin/sh\necho hi\n");
            // Nova's dated folders beside latest, each with what its version has.
            let folsom = json("/openstack/2012-08-10/meta_data.json");
            assert_eq!(folsom["uuid"], id.to_string());
            assert!(folsom.get("random_seed").is_none(), "Grizzly added random_seed: {folsom}");
            assert_eq!(json("/openstack/2016-10-06/vendor_data2.json"), serde_json::json!({"static": {}}));
            assert_eq!(json("/openstack/2015-10-15/network_data.json")["links"][0]["mtu"], 1450);
            assert_eq!(json("/openstack/latest/vendor_data.json"), serde_json::json!({}));
            // The EC2 tree.
            let ec2 = json("/ec2/latest/meta-data.json");
            assert_eq!(ec2["hostname"], "web-one", "{format:?}");
            assert_eq!(ec2["local-ipv4"], "10.0.0.5");
            assert_eq!(ec2["public-keys"]["0"]["openssh-key"], "ssh-ed25519 AAAA test");
            assert_eq!(ec2["placement"]["availability-zone"], "nova");
            assert_eq!(json("/ec2/2009-04-04/meta-data.json")["instance-type"], "m1.tiny");
            assert_eq!(ec2["security-groups"], serde_json::json!(["web"]), "the instance's groups");
            assert_eq!(read_back(format, &out, "/ec2/latest/user-data"), "#!/bin/sh\necho hi\n");
        }
    }
}
