//! Volumes as sparse raw files, `<dir>/<volume id>.raw`: the embedded default for a one-machine
//! cloud. Made under a temporary name, sized, flushed and renamed, so a crash never leaves a
//! half-made volume under its real name.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use meridian_common::agent::VolumeSpec;

use super::{Storage, StorageError, check_id};

const GIB: u64 = 1 << 30;

#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    pub fn open(dir: &Path) -> std::io::Result<FileStorage> {
        std::fs::create_dir_all(dir)?;
        Ok(FileStorage { dir: dir.to_path_buf() })
    }

    /// Where a volume's bytes are.
    pub fn path(&self, id: &str) -> Result<PathBuf, StorageError> {
        Ok(self.dir.join(format!("{}.raw", check_id(id)?)))
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Storage for FileStorage {
    fn create(&self, v: &VolumeSpec) -> Result<(), StorageError> {
        let path = self.path(&v.id)?;
        let fail = |source| StorageError::Create { id: v.id.clone(), source };
        let want = v.size_gb.saturating_mul(GIB);
        if let Ok(meta) = std::fs::metadata(&path) {
            // A repeated create (the first one's acknowledgement was lost).
            return if meta.len() == want { Ok(()) } else { self.extend(v) };
        }
        let tmp = path.with_extension("raw.part");
        let f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(fail)?;
        f.set_len(want).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)?;
        self.sync_dir().map_err(fail)
    }

    fn extend(&self, v: &VolumeSpec) -> Result<(), StorageError> {
        let path = self.path(&v.id)?;
        let fail = |source| StorageError::Extend { id: v.id.clone(), source };
        let want = v.size_gb.saturating_mul(GIB);
        let f = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StorageError::Missing(v.id.clone())),
            Err(e) => return Err(fail(e)),
        };
        let have = f.metadata().map_err(fail)?.len();
        if have > want {
            return Err(StorageError::Shrink { id: v.id.clone(), have, want });
        }
        if have < want {
            f.set_len(want).map_err(fail)?;
            f.sync_all().map_err(fail)?;
        }
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<(), StorageError> {
        let path = self.path(id)?;
        let fail = |source| StorageError::Delete { id: id.to_string(), source };
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir().map_err(fail),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }

    fn exists(&self, id: &str) -> Result<bool, StorageError> {
        Ok(self.path(id)?.exists())
    }

    fn locator(&self, id: &str) -> Result<String, StorageError> {
        Ok(self.path(id)?.to_string_lossy().into_owned())
    }

    fn source_xml(&self, id: &str) -> Result<(String, String), StorageError> {
        let path = self.path(id)?;
        Ok(("file".into(), format!("<source file='{}'/>", crate::xml::esc(&path.to_string_lossy()))))
    }

    fn create_from_image(&self, v: &VolumeSpec, image: &Path, format: &str) -> Result<(), StorageError> {
        let path = self.path(&v.id)?;
        let want = v.size_gb.saturating_mul(GIB);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == want) {
            // A repeat whose first run finished (the rename is the last step).
            return Ok(());
        }
        let fail = |source| StorageError::Create { id: v.id.clone(), source };
        let import = |reason: String| StorageError::Import {
            id: v.id.clone(),
            image: image.to_string_lossy().into_owned(),
            reason,
        };
        let tmp = path.with_extension("raw.part");
        let _ = std::fs::remove_file(&tmp);
        // Raw output is written sparse (zero runs skipped), so an image's holes stay holes.
        let qemu_img = std::env::var_os("MERIDIAN_QEMU_IMG").unwrap_or_else(|| "qemu-img".into());
        let out = std::process::Command::new(qemu_img)
            .args(["convert", "-q", "-f", format, "-O", "raw"])
            .arg(image)
            .arg(&tmp)
            .output()
            .map_err(fail)?;
        let cleanup = |e: StorageError| {
            let _ = std::fs::remove_file(&tmp);
            e
        };
        if !out.status.success() {
            return Err(cleanup(import(String::from_utf8_lossy(&out.stderr).trim().to_string())));
        }
        let f = OpenOptions::new().write(true).open(&tmp).map_err(|e| cleanup(fail(e)))?;
        let have = f.metadata().map_err(|e| cleanup(fail(e)))?.len();
        if have > want {
            return Err(cleanup(import(format!(
                "its virtual size of {have} bytes does not fit the volume's {} GiB",
                v.size_gb
            ))));
        }
        f.set_len(want).map_err(|e| cleanup(fail(e)))?;
        f.sync_all().map_err(|e| cleanup(fail(e)))?;
        std::fs::rename(&tmp, &path).map_err(|e| cleanup(fail(e)))?;
        self.sync_dir().map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, size_gb: u64) -> VolumeSpec {
        VolumeSpec { id: id.into(), size_gb, readonly: false }
    }

    #[test]
    fn create_extend_delete_are_idempotent_and_never_shrink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileStorage::open(dir.path()).expect("open");
        let id = "0b6c58c4-4c53-4c65-9a39-5b2b1f0d8d11";
        s.create(&spec(id, 10)).expect("create");
        s.create(&spec(id, 10)).expect("create again");
        let path = s.path(id).expect("path");
        let meta = std::fs::metadata(&path).expect("file");
        assert_eq!(meta.len(), 10 * GIB);
        // Sparse: 10 GiB of nothing takes (almost) no blocks.
        assert!(std::os::unix::fs::MetadataExt::blocks(&meta) < 1024, "not sparse: {meta:?}");
        std::fs::write(dir.path().join("probe"), b"x").expect("probe");
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = OpenOptions::new().write(true).open(&path).expect("open volume");
            f.seek(SeekFrom::Start(GIB)).expect("seek");
            f.write_all(b"token").expect("write");
        }
        s.extend(&spec(id, 12)).expect("extend");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), 12 * GIB);
        let data = std::fs::read(&path).expect("read");
        assert_eq!(&data[GIB as usize..GIB as usize + 5], b"token", "extend keeps the data");
        drop(data);
        assert!(matches!(s.extend(&spec(id, 11)), Err(StorageError::Shrink { .. })));
        s.delete(id).expect("delete");
        s.delete(id).expect("delete again");
        assert!(!s.exists(id).expect("exists"));
        assert!(matches!(s.create(&spec("../etc/passwd", 1)), Err(StorageError::BadId(_))));
    }

    /// A qcow2 image (made by the real qemu-img) becomes the volume's first bytes, raw, grown
    /// to the volume's size; a repeat changes nothing; an image larger than the volume leaves
    /// nothing behind.
    #[test]
    fn an_image_becomes_a_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileStorage::open(&dir.path().join("volumes")).expect("open");
        let raw = dir.path().join("image.raw");
        let content: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 253) as u8 + 1).collect();
        std::fs::write(&raw, &content).expect("raw image");
        let qcow2 = dir.path().join("image.qcow2");
        let made = std::process::Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2)
            .status()
            .expect("qemu-img");
        assert!(made.success());
        let id = "7d0c7a47-3c5e-4b77-8f43-0a4c6b1e2f10";
        s.create_from_image(&spec(id, 1), &qcow2, "qcow2").expect("volume from image");
        let path = s.path(id).expect("path");
        let data = std::fs::read(&path).expect("volume");
        assert_eq!(data.len() as u64, GIB);
        assert!(data[..content.len()] == content[..], "the image's bytes");
        assert!(data[content.len()..].iter().all(|b| *b == 0));
        drop(data);
        s.create_from_image(&spec(id, 1), &qcow2, "qcow2").expect("a repeat");
        assert!(!path.with_extension("raw.part").exists());

        // 3 MiB do not fit a volume of 0 GiB: refused, nothing left.
        let small = "7d0c7a47-3c5e-4b77-8f43-0a4c6b1e2f11";
        let e = s.create_from_image(&spec(small, 0), &raw, "raw").expect_err("too small");
        assert!(matches!(e, StorageError::Import { .. }), "{e}");
        assert!(!s.exists(small).expect("exists"));
        assert!(!s.path(small).expect("path").with_extension("raw.part").exists());
        // Not an image at all in the format named: qemu-img's complaint.
        let e = s.create_from_image(&spec(small, 1), &raw, "qcow2").expect_err("not qcow2");
        assert!(matches!(e, StorageError::Import { .. }), "{e}");
    }
}
