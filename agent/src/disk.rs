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

/// The virtual size in bytes of an image in `format`.
pub async fn virtual_size(image: &Path, format: &str) -> Result<u64, DiskError> {
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
    let size = wanted.max(image_bytes).to_string();
    run(
        "create",
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            base_format.as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            tmp.as_os_str(),
            size.as_ref(),
        ],
    )
    .await?;
    tokio::fs::rename(&tmp, overlay).await.map_err(DiskError::Io)?;
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
