//! Instance disks: a qcow2 overlay on the cached base image, sized to the flavor's root disk.
//! Runs `qemu-img` (`$MERIDIAN_QEMU_IMG`, else `qemu-img` on `PATH`).

use std::ffi::OsString;
use std::path::Path;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot run qemu-img")]
    Spawn(#[source] std::io::Error),
    #[error("qemu-img {action} failed: {stderr}")]
    QemuImg { action: &'static str, stderr: String },
    #[error("disk format {0:?} cannot back an instance disk")]
    Format(String),
    #[error("the flavor's root disk ({flavor_gb} GB) is smaller than the image ({image_bytes} bytes)")]
    TooSmall { flavor_gb: u64, image_bytes: u64 },
    #[error("cannot write the instance disk")]
    Io(#[source] std::io::Error),
    #[error("cannot run {tool}")]
    ToolSpawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Tool { tool: &'static str, stderr: String },
}

fn qemu_img() -> OsString {
    std::env::var_os("MERIDIAN_QEMU_IMG").unwrap_or_else(|| "qemu-img".into())
}

/// qemu's name for a Glance `disk_format`.
pub fn qemu_format(disk_format: &str) -> Result<&'static str, DiskError> {
    match disk_format {
        "qcow2" => Ok("qcow2"),
        "raw" | "ami" => Ok("raw"),
        "vmdk" => Ok("vmdk"),
        "vdi" => Ok("vdi"),
        "vhd" => Ok("vpc"),
        "vhdx" => Ok("vhdx"),
        other => Err(DiskError::Format(other.to_string())),
    }
}

async fn run(action: &'static str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, DiskError> {
    let out = Command::new(qemu_img()).args(args).kill_on_drop(true).output().await.map_err(DiskError::Spawn)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(DiskError::QemuImg { action, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// The virtual size in bytes of an image in `format`. Raw and qcow2 are read directly (a raw
/// image's size is its length, a qcow2's is in its header): forking qemu-img costs more CPU
/// than the rest of a build on a busy host.
pub async fn virtual_size(image: &Path, format: &str) -> Result<u64, DiskError> {
    match format {
        "raw" => return Ok(tokio::fs::metadata(image).await.map_err(DiskError::Io)?.len()),
        "qcow2" => {
            let mut header = [0u8; 32];
            let mut f = tokio::fs::File::open(image).await.map_err(DiskError::Io)?;
            tokio::io::AsyncReadExt::read_exact(&mut f, &mut header).await.map_err(DiskError::Io)?;
            if header[..4] == QCOW2_MAGIC {
                return Ok(u64::from_be_bytes(header[24..32].try_into().unwrap_or_default()));
            }
            return Err(DiskError::QemuImg { action: "info", stderr: "not a qcow2 image".into() });
        }
        _ => {}
    }
    let out =
        run("info", &["info".as_ref(), "--output=json".as_ref(), "-f".as_ref(), format.as_ref(), image.as_os_str()])
            .await?;
    let v: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| DiskError::QemuImg { action: "info", stderr: e.to_string() })?;
    v["virtual-size"]
        .as_u64()
        .ok_or_else(|| DiskError::QemuImg { action: "info", stderr: "no virtual-size in its output".into() })
}

/// Creates `overlay` as a qcow2 backed by `base` (in qemu format `base_format`). With
/// `size_gb` > 0 the disk is grown to that size (it must not be smaller than the image);
/// with 0 it keeps the image's size, as Nova does for flavors without a root disk size.
/// Any previous file at `overlay` (a build interrupted earlier) is replaced.
pub async fn create_overlay(base: &Path, base_format: &str, overlay: &Path, size_gb: u64) -> Result<(), DiskError> {
    let image_bytes = virtual_size(base, base_format).await?;
    let wanted = size_gb.saturating_mul(1 << 30);
    if size_gb > 0 && wanted < image_bytes {
        return Err(DiskError::TooSmall { flavor_gb: size_gb, image_bytes });
    }
    let tmp = overlay.with_extension("tmp");
    let _ = tokio::fs::remove_file(&tmp).await;
    let image = qcow2_overlay(wanted.max(image_bytes), base, base_format)?;
    tokio::fs::write(&tmp, image).await.map_err(DiskError::Io)?;
    tokio::fs::rename(&tmp, overlay).await.map_err(DiskError::Io)?;
    Ok(())
}

/// Points a qcow2 `disk` at `base` (in qemu format `base_format`) without touching its data
/// (`qemu-img rebase -u`): a disk moved from another host, whose backing file is the same
/// image at another path.
pub async fn rebase(disk: &Path, base: &Path, base_format: &str) -> Result<(), DiskError> {
    let args: [&std::ffi::OsStr; 8] = [
        "rebase".as_ref(),
        "-u".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-b".as_ref(),
        base.as_os_str(),
        "-F".as_ref(),
        base_format.as_ref(),
    ];
    let mut all: Vec<&std::ffi::OsStr> = args.to_vec();
    all.push(disk.as_os_str());
    run("rebase", &all).await.map(|_| ())
}

/// Grows a qcow2 `disk` to `size_gb` GiB; never shrinks it (a smaller or zero size changes
/// nothing).
pub async fn grow(disk: &Path, size_gb: u64) -> Result<(), DiskError> {
    let wanted = size_gb.saturating_mul(1 << 30);
    if size_gb == 0 || virtual_size(disk, "qcow2").await? >= wanted {
        return Ok(());
    }
    let size = wanted.to_string();
    run("resize", &["resize".as_ref(), "-f".as_ref(), "qcow2".as_ref(), disk.as_os_str(), size.as_ref()])
        .await
        .map(|_| ())
}

/// A local disk beside the root disk (Nova's `disk.local`/`disk.eph<N>` / `disk.swap`): the
/// flavor's, or those `block_device_mapping_v2` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalDisk {
    /// The `index`th ephemeral disk, formatted `fs` labelled `ephemeral<index>` (Nova's libvirt
    /// default for Linux guests: `mkfs -t ext4 -L ephemeral0`), which cloud-init mounts on
    /// `/mnt` from the metadata's `block-device-mapping/ephemeral0`.
    Ephemeral { index: usize, fs: Fs },
    /// `swap` MiB, made a swap area with `mkswap` (as Nova's `_create_swap`).
    Swap,
}

/// The file systems an ephemeral disk may get (Nova's libvirt `is_supported_fs_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
}

impl Fs {
    /// A mapping's `guest_format` (`None`: ext4); `Err` names one Nova's driver refuses too.
    pub fn parse(guest_format: Option<&str>) -> Result<Fs, String> {
        match guest_format {
            None | Some("ext4") => Ok(Fs::Ext4),
            Some("ext3") => Ok(Fs::Ext3),
            Some("ext2") => Ok(Fs::Ext2),
            Some("xfs") => Ok(Fs::Xfs),
            Some(other) => Err(format!("Block Device Mapping is Invalid: {other} format is not supported")),
        }
    }

    fn mkfs(self) -> &'static str {
        match self {
            Fs::Ext2 => "mkfs.ext2",
            Fs::Ext3 => "mkfs.ext3",
            Fs::Ext4 => "mkfs.ext4",
            Fs::Xfs => "mkfs.xfs",
        }
    }
}

impl LocalDisk {
    /// The flavor's one ephemeral disk.
    pub const FLAVOR_EPHEMERAL: LocalDisk = LocalDisk::Ephemeral { index: 0, fs: Fs::Ext4 };

    /// The file in the instance directory.
    pub fn file_name(self) -> String {
        match self {
            LocalDisk::Ephemeral { index, .. } => format!("disk.eph{index}"),
            LocalDisk::Swap => "disk.swap".to_string(),
        }
    }
}

/// Makes the flavor's local disk `kind` of `bytes` at `path` (raw and sparse: only what the
/// guest writes takes host space), or brings an existing one to the flavor:
/// - ephemeral: kept as it is (a rebuild or a resize keeps its data); grown when the flavor's
///   is larger (the file system is not grown: the guest's `resize2fs` is for the guest to
///   run, as with Nova); never shrunk.
/// - swap: holds nothing worth keeping, so a different size makes a new one.
///
/// `bytes == 0` removes nothing: a disk the flavor no longer has is left unattached until the
/// instance goes (the server refuses resizes that shrink the ephemeral disk).
pub async fn ensure_local(path: &Path, kind: LocalDisk, bytes: u64) -> Result<(), DiskError> {
    if bytes == 0 {
        return Ok(());
    }
    let existing = match tokio::fs::metadata(path).await {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(DiskError::Io(e)),
    };
    match (kind, existing) {
        (_, Some(len)) if len == bytes => return Ok(()),
        (LocalDisk::Ephemeral { .. }, Some(len)) if len > bytes => return Ok(()),
        (LocalDisk::Ephemeral { .. }, Some(_)) => {
            let f = tokio::fs::OpenOptions::new().write(true).open(path).await.map_err(DiskError::Io)?;
            return f.set_len(bytes).await.map_err(DiskError::Io);
        }
        _ => {}
    }
    // Made aside and renamed: a half-formatted disk is never taken for a finished one.
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".new");
    let tmp = path.with_file_name(tmp_name);
    let f = tokio::fs::File::create(&tmp).await.map_err(DiskError::Io)?;
    f.set_len(bytes).await.map_err(DiskError::Io)?;
    drop(f);
    let label = match kind {
        LocalDisk::Ephemeral { index, .. } => format!("ephemeral{index}"),
        LocalDisk::Swap => "swap".to_string(),
    };
    let (tool, args): (&'static str, Vec<&std::ffi::OsStr>) = match kind {
        LocalDisk::Ephemeral { fs: fs @ (Fs::Ext2 | Fs::Ext3 | Fs::Ext4), .. } => {
            (fs.mkfs(), vec!["-F".as_ref(), "-q".as_ref(), "-L".as_ref(), label.as_ref(), tmp.as_os_str()])
        }
        LocalDisk::Ephemeral { fs, .. } => {
            (fs.mkfs(), vec!["-f".as_ref(), "-q".as_ref(), "-L".as_ref(), label.as_ref(), tmp.as_os_str()])
        }
        LocalDisk::Swap => ("mkswap", vec!["-L".as_ref(), label.as_ref(), tmp.as_os_str()]),
    };
    let out = Command::new(tool)
        .args(&args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| DiskError::ToolSpawn { tool, source })?;
    if !out.status.success() {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(DiskError::Tool { tool, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    tokio::fs::rename(&tmp, path).await.map_err(DiskError::Io)
}

const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
const CLUSTER_BITS: u32 = 16;
const CLUSTER: usize = 1 << CLUSTER_BITS;

/// An empty qcow2 (version 3) image of `size` bytes backed by `base`: what
/// `qemu-img create -f qcow2 -b BASE -F FMT` writes, built in memory (no fork, a few µs).
///
/// Layout, as qemu lays it out: cluster 0 the header, its extensions and the backing file
/// name; cluster 1 the refcount table; cluster 2 the one refcount block; then the L1 table,
/// all zero (every read falls through to the backing file until the guest writes).
fn qcow2_overlay(size: u64, base: &Path, base_format: &str) -> Result<Vec<u8>, DiskError> {
    use std::os::unix::ffi::OsStrExt;
    let backing = base.as_os_str().as_bytes();
    let l2_span = (CLUSTER as u64) * (CLUSTER as u64 / 8); // bytes one L2 table maps
    let l1_size = size.div_ceil(l2_span);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER as u64).max(1);
    let clusters = 3 + l1_clusters;
    if clusters > (CLUSTER / 2) as u64 {
        return Err(DiskError::QemuImg { action: "create", stderr: "disk too large for one refcount block".into() });
    }
    const HEADER_LEN: usize = 112;
    let mut ext = Vec::new();
    ext.extend_from_slice(&0xe279_2acau32.to_be_bytes()); // backing file format name
    ext.extend_from_slice(&(base_format.len() as u32).to_be_bytes());
    ext.extend_from_slice(base_format.as_bytes());
    ext.resize(ext.len().next_multiple_of(8), 0);
    ext.extend_from_slice(&[0u8; 8]); // end of extensions
    let backing_offset = HEADER_LEN + ext.len();
    if backing_offset + backing.len() > CLUSTER || backing.len() > 1023 {
        return Err(DiskError::QemuImg { action: "create", stderr: "backing file path too long".into() });
    }

    let mut out = vec![0u8; clusters as usize * CLUSTER];
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&QCOW2_MAGIC);
    h.extend_from_slice(&3u32.to_be_bytes()); // version
    h.extend_from_slice(&(backing_offset as u64).to_be_bytes());
    h.extend_from_slice(&(backing.len() as u32).to_be_bytes());
    h.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    h.extend_from_slice(&size.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    h.extend_from_slice(&(l1_size as u32).to_be_bytes());
    h.extend_from_slice(&(3 * CLUSTER as u64).to_be_bytes()); // L1 table
    h.extend_from_slice(&(CLUSTER as u64).to_be_bytes()); // refcount table
    h.extend_from_slice(&1u32.to_be_bytes()); // refcount table clusters
    h.extend_from_slice(&0u32.to_be_bytes()); // snapshots
    h.extend_from_slice(&0u64.to_be_bytes());
    h.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // compatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
    h.extend_from_slice(&4u32.to_be_bytes()); // refcount order: 16-bit refcounts
    h.extend_from_slice(&(HEADER_LEN as u32).to_be_bytes());
    h.push(0); // compression type zlib
    h.resize(HEADER_LEN, 0);
    out[..HEADER_LEN].copy_from_slice(&h);
    out[HEADER_LEN..backing_offset].copy_from_slice(&ext);
    out[backing_offset..backing_offset + backing.len()].copy_from_slice(backing);
    // Refcount table → the refcount block in cluster 2, which counts every cluster once.
    out[CLUSTER..CLUSTER + 8].copy_from_slice(&(2 * CLUSTER as u64).to_be_bytes());
    for c in 0..clusters as usize {
        let at = 2 * CLUSTER + c * 2;
        out[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(out)
}

/// Writes `src` (a qcow2 overlay and its backing chain, or any image qemu reads) to `dest` as
/// one standalone image in qemu format `format` (`qcow2` or `raw`): an instance snapshot.
/// Reads with `--force-share`, so a guest paused on the disk keeps its lock. Any previous
/// file at `dest` is replaced.
pub async fn convert(src: &Path, format: &str, dest: &Path) -> Result<(), DiskError> {
    let _ = tokio::fs::remove_file(dest).await;
    run(
        "convert",
        &["convert".as_ref(), "-U".as_ref(), "-O".as_ref(), format.as_ref(), src.as_os_str(), dest.as_os_str()],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overlay_grows_to_the_flavor_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base");
        std::fs::write(&base, vec![0u8; 1 << 20]).expect("base");
        let overlay = dir.path().join("disk");
        create_overlay(&base, "raw", &overlay, 1).await.expect("overlay");
        assert_eq!(virtual_size(&overlay, "qcow2").await.expect("size"), 1 << 30);
        // Size 0 keeps the image's size; a repeat replaces the file.
        create_overlay(&base, "raw", &overlay, 0).await.expect("overlay again");
        assert_eq!(virtual_size(&overlay, "qcow2").await.expect("size"), 1 << 20);
        let err = create_overlay(&overlay, "qcow2", &dir.path().join("x"), 0).await.map(|_| ());
        assert!(err.is_ok(), "an overlay can back another: {err:?}");
    }

    #[tokio::test]
    async fn local_disks_are_made_sized_formatted_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let eph = dir.path().join(LocalDisk::FLAVOR_EPHEMERAL.file_name());
        ensure_local(&eph, LocalDisk::FLAVOR_EPHEMERAL, 64 << 20).await.expect("ephemeral");
        assert_eq!(std::fs::metadata(&eph).expect("eph").len(), 64 << 20);
        // ext4's superblock magic (0xEF53 at 1080) and the label at 1144.
        let head = std::fs::read(&eph).expect("read");
        assert_eq!(&head[1080..1082], &[0x53, 0xef]);
        assert_eq!(&head[1144..1154], b"ephemeral0");
        // Kept (its data too) when asked again, grown for a larger flavor, never shrunk.
        std::fs::write(dir.path().join("marker"), b"x").expect("marker");
        ensure_local(&eph, LocalDisk::FLAVOR_EPHEMERAL, 64 << 20).await.expect("again");
        assert_eq!(&std::fs::read(&eph).expect("read")[1144..1154], b"ephemeral0");
        ensure_local(&eph, LocalDisk::FLAVOR_EPHEMERAL, 128 << 20).await.expect("grow");
        assert_eq!(std::fs::metadata(&eph).expect("eph").len(), 128 << 20);
        ensure_local(&eph, LocalDisk::FLAVOR_EPHEMERAL, 32 << 20).await.expect("no shrink");
        assert_eq!(std::fs::metadata(&eph).expect("eph").len(), 128 << 20);

        let swap = dir.path().join(LocalDisk::Swap.file_name());
        ensure_local(&swap, LocalDisk::Swap, 16 << 20).await.expect("swap");
        let head = std::fs::read(&swap).expect("read");
        // mkswap's signature ends the first 4 KiB page.
        assert_eq!(&head[4096 - 10..4096], b"SWAPSPACE2");
        ensure_local(&swap, LocalDisk::Swap, 8 << 20).await.expect("swap resized");
        assert_eq!(std::fs::metadata(&swap).expect("swap").len(), 8 << 20);
        assert!(!dir.path().join("disk.swap.new").exists());
        // Nothing asked, nothing made.
        let none = dir.path().join("none");
        ensure_local(&none, LocalDisk::Swap, 0).await.expect("zero");
        assert!(!none.exists());
    }

    #[tokio::test]
    async fn a_mapping_ephemeral_gets_its_index_label_and_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kind = LocalDisk::Ephemeral { index: 1, fs: Fs::parse(Some("ext3")).expect("ext3") };
        assert_eq!(kind.file_name(), "disk.eph1");
        let eph = dir.path().join(kind.file_name());
        ensure_local(&eph, kind, 32 << 20).await.expect("ephemeral");
        let head = std::fs::read(&eph).expect("read");
        assert_eq!(&head[1080..1082], &[0x53, 0xef], "an ext superblock");
        assert_eq!(&head[1144..1154], b"ephemeral1");
        // ext3 has a journal but not ext4's extents (s_feature_incompat at 1120, 0x40).
        let compat = u32::from_le_bytes([head[1116], head[1117], head[1118], head[1119]]);
        let incompat = u32::from_le_bytes([head[1120], head[1121], head[1122], head[1123]]);
        assert!(compat & 0x4 != 0 && incompat & 0x40 == 0, "ext3: {compat:#x} {incompat:#x}");
        assert_eq!(
            Fs::parse(Some("vfat")),
            Err("Block Device Mapping is Invalid: vfat format is not supported".to_string())
        );
    }

    /// The overlay we write is one qemu accepts as its own: `qemu-img check` finds no error,
    /// `info` reports the backing file and size, and reads fall through to the base.
    #[tokio::test]
    async fn native_overlay_is_a_valid_qcow2_that_reads_through_to_its_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base");
        let pattern: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 253) as u8).collect();
        std::fs::write(&base, &pattern).expect("base");
        for (gb, expect) in [(0u64, 3u64 << 20), (1, 1 << 30), (600, 600 << 30)] {
            let overlay = dir.path().join(format!("disk{gb}"));
            create_overlay(&base, "raw", &overlay, gb).await.expect("overlay");
            run("check", &["check".as_ref(), "-f".as_ref(), "qcow2".as_ref(), overlay.as_os_str()])
                .await
                .expect("qemu-img check accepts it");
            let info =
                run("info", &["info".as_ref(), "--output=json".as_ref(), overlay.as_os_str()]).await.expect("info");
            let info: serde_json::Value = serde_json::from_slice(&info).expect("json");
            assert_eq!(info["virtual-size"], expect, "{info}");
            assert_eq!(info["backing-filename"], base.to_string_lossy().as_ref(), "{info}");
            assert_eq!(info["backing-filename-format"], "raw", "{info}");
            assert_eq!(virtual_size(&overlay, "qcow2").await.expect("size"), expect);
        }
        let raw = dir.path().join("flat");
        let overlay = dir.path().join("disk0");
        run("convert", &["convert".as_ref(), "-O".as_ref(), "raw".as_ref(), overlay.as_os_str(), raw.as_os_str()])
            .await
            .expect("convert");
        assert!(std::fs::read(&raw).expect("flat") == pattern, "the overlay reads as its base");
    }

    #[tokio::test]
    async fn flavor_smaller_than_image_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base");
        let img = dir.path().join("big");
        std::fs::write(&base, b"").expect("base");
        run(
            "create",
            &["create".as_ref(), "-q".as_ref(), "-f".as_ref(), "qcow2".as_ref(), img.as_os_str(), "2G".as_ref()],
        )
        .await
        .expect("big image");
        let err = create_overlay(&img, "qcow2", &dir.path().join("disk"), 1).await.expect_err("too small");
        assert!(matches!(err, DiskError::TooSmall { flavor_gb: 1, .. }), "{err:?}");
        assert!(matches!(qemu_format("iso"), Err(DiskError::Format(_))));
        assert_eq!(qemu_format("vhd").expect("vhd"), "vpc");
    }
}
