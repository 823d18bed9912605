//! Volumes as sparse raw files, `<dir>/<volume id>.raw`: the embedded default for a one-machine
//! cloud. Made under a temporary name, sized, flushed and renamed, so a crash never leaves a
//! half-made volume under its real name. Snapshots are sparse copies in
//! `<dir>/snapshots/<snapshot id>.raw`, made the same way; clones copy a snapshot or a volume
//! the same way. Copies keep holes: only the data extents (`SEEK_DATA`/`SEEK_HOLE`) are read,
//! and blocks of zeros in them are not written.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use meridian_common::agent::VolumeSpec;

use super::{CloneSource, Export, Storage, StorageError, check_id};

/// Copy unit: data extents are read and written in blocks of this size.
const COPY_BLOCK: usize = 1 << 20;

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

    /// Where a snapshot's bytes are.
    pub fn snapshot_path(&self, id: &str) -> Result<PathBuf, StorageError> {
        Ok(self.dir.join("snapshots").join(format!("{}.raw", check_id(id)?)))
    }
}

/// Copies `src` to `dest` through `dest`'s temporary name (`.part`): sized to at least `len`,
/// only data extents read, zero blocks left as holes, fsynced, renamed, the directory fsynced.
/// A crash leaves at most a `.part` file, never a half copy under the real name.
fn sparse_copy(src: &Path, dest: &Path, len: u64) -> std::io::Result<()> {
    let from = File::open(src)?;
    let src_len = from.metadata()?.len();
    let tmp = dest.with_extension("raw.part");
    let to = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    to.set_len(len.max(src_len))?;
    let mut buf = vec![0u8; COPY_BLOCK];
    let mut at = 0u64;
    while at < src_len {
        // The next data extent [start, end); a file system without SEEK_DATA has one, all of it.
        let start = match rustix::fs::seek(&from, rustix::fs::SeekFrom::Data(at)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) => at,
            Err(e) => return Err(e.into()),
        };
        let end = match rustix::fs::seek(&from, rustix::fs::SeekFrom::Hole(start)) {
            Ok(p) => p.min(src_len),
            Err(rustix::io::Errno::INVAL) => src_len,
            Err(e) => return Err(e.into()),
        };
        let mut pos = start;
        while pos < end {
            let n = usize::try_from((end - pos).min(COPY_BLOCK as u64)).unwrap_or(COPY_BLOCK);
            from.read_exact_at(&mut buf[..n], pos)?;
            if buf[..n].iter().any(|b| *b != 0) {
                to.write_all_at(&buf[..n], pos)?;
            }
            pos += n as u64;
        }
        at = end.max(start + 1);
    }
    to.sync_all()?;
    drop(to);
    std::fs::rename(&tmp, dest)?;
    if let Some(dir) = dest.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Runs `qemu-img convert -f raw -O qcow2 src dest` (blocking).
fn convert_qcow2(src: &Path, dest: &Path) -> std::io::Result<()> {
    let qemu_img = std::env::var_os("MERIDIAN_QEMU_IMG").unwrap_or_else(|| "qemu-img".into());
    let out = std::process::Command::new(qemu_img)
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(src)
        .arg(dest)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("qemu-img convert failed: {}", String::from_utf8_lossy(&out.stderr).trim())))
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

    fn snapshot_create(&self, volume_id: &str, snapshot_id: &str) -> Result<(), StorageError> {
        let (src, dest) = (self.path(volume_id)?, self.snapshot_path(snapshot_id)?);
        let fail = |source| StorageError::Snapshot {
            volume: volume_id.to_string(),
            snapshot: snapshot_id.to_string(),
            source,
        };
        if dest.exists() {
            // A repeated create: the first one finished (the rename is its last step).
            return Ok(());
        }
        if !src.exists() {
            return Err(StorageError::Missing(volume_id.to_string()));
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        sparse_copy(&src, &dest, 0).map_err(fail)
    }

    fn snapshot_delete(&self, snapshot_id: &str) -> Result<(), StorageError> {
        let path = self.snapshot_path(snapshot_id)?;
        let fail = |source| StorageError::DeleteSnapshot { id: snapshot_id.to_string(), source };
        let _ = std::fs::remove_file(path.with_extension("raw.part"));
        match std::fs::remove_file(&path) {
            Ok(()) => path.parent().map_or(Ok(()), |d| File::open(d)?.sync_all()).map_err(fail),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }

    fn create_from(&self, v: &VolumeSpec, source: CloneSource<'_>) -> Result<(), StorageError> {
        let dest = self.path(&v.id)?;
        if dest.exists() {
            // A repeated create (the first one's acknowledgement was lost): only the size.
            return self.extend(v);
        }
        let (src, from) = match source {
            CloneSource::Snapshot(id) => {
                let p = self.snapshot_path(id)?;
                if !p.exists() {
                    return Err(StorageError::MissingSnapshot(id.to_string()));
                }
                (p, format!("snapshot {id}"))
            }
            CloneSource::Volume(id) => {
                let p = self.path(id)?;
                if !p.exists() {
                    return Err(StorageError::Missing(id.to_string()));
                }
                (p, format!("volume {id}"))
            }
        };
        let want = v.size_gb.saturating_mul(GIB);
        // Never shorter than the source (the server refuses a smaller size anyway).
        sparse_copy(&src, &dest, want).map_err(|source| StorageError::Clone { id: v.id.clone(), from, source })
    }

    fn revert(&self, volume_id: &str, snapshot_id: &str) -> Result<(), StorageError> {
        let (dest, src) = (self.path(volume_id)?, self.snapshot_path(snapshot_id)?);
        if !src.exists() {
            return Err(StorageError::MissingSnapshot(snapshot_id.to_string()));
        }
        let fail =
            |source| StorageError::Revert { id: volume_id.to_string(), snapshot: snapshot_id.to_string(), source };
        let len = match std::fs::metadata(&dest) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::Missing(volume_id.to_string())),
            Err(e) => return Err(fail(e)),
        };
        // The copy goes to the volume's `.part` name and is renamed over it, so a crash leaves
        // the old bytes or the snapshot's, never a mix. The volume keeps its length (the
        // server refuses a snapshot of another size).
        sparse_copy(&src, &dest, len).map_err(fail)
    }

    fn export(&self, id: &str, disk_format: &str) -> Result<Export, StorageError> {
        let src = self.path(id)?;
        if !src.exists() {
            return Err(StorageError::Missing(id.to_string()));
        }
        let fail = |source| StorageError::Export { id: id.to_string(), format: disk_format.to_string(), source };
        let file = match disk_format {
            "raw" => File::open(&src).map_err(fail)?,
            "qcow2" => {
                let dir = self.dir.join("exports");
                std::fs::create_dir_all(&dir).map_err(fail)?;
                let tmp = dir.join(format!("{}.{}.qcow2", check_id(id)?, uuid::Uuid::new_v4().simple()));
                let converted = convert_qcow2(&src, &tmp);
                let opened = converted.and_then(|()| File::open(&tmp));
                // Unlinked at once: the open file is all the export needs, and nothing stays
                // behind whatever happens to the reader.
                let _ = std::fs::remove_file(&tmp);
                opened.map_err(fail)?
            }
            other => return Err(StorageError::ExportFormat(other.to_string())),
        };
        let len = file.metadata().map_err(fail)?.len();
        Ok(Export { reader: Box::new(file), len })
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

    fn write_at(path: &Path, at: u64, data: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).expect("open");
        f.write_all_at(data, at).expect("write");
        f.sync_all().expect("sync");
    }

    fn allocated(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).expect("meta")) * 512
    }

    fn leftovers(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in [dir.to_path_buf(), dir.join("snapshots"), dir.join("exports")] {
            for e in std::fs::read_dir(&sub).into_iter().flatten().filter_map(Result::ok) {
                if e.path().extension().is_some_and(|x| x == "part") || sub.ends_with("exports") {
                    out.push(e.path());
                }
            }
        }
        out
    }

    #[test]
    fn snapshots_and_clones_are_sparse_copies_that_never_touch_their_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileStorage::open(dir.path()).expect("open");
        let vol = "3f1c4a3e-8c1e-4b8e-9d55-0a6f4f1b2c01";
        let (snap, from_snap, clone) = (
            "7d2e9a61-5b0c-4f7e-8a3d-2c9b1e0f4a12",
            "a9b8c7d6-1e2f-4a3b-8c4d-5e6f7a8b9c03",
            "c0ffee00-1234-4abc-8def-0123456789ab",
        );
        s.create(&spec(vol, 2)).expect("create");
        let path = s.path(vol).expect("path");
        // Data at the start, in the middle of the first GiB and at the very end; holes between.
        write_at(&path, 0, b"boot sector");
        write_at(&path, 700 << 20, &[0xab; 3 << 20]);
        write_at(&path, (2 * GIB) - 5, b"tail!");
        let original = std::fs::read(&path).expect("read");

        s.snapshot_create(vol, snap).expect("snapshot");
        s.snapshot_create(vol, snap).expect("snapshot again (a redelivery)");
        let snap_path = s.snapshot_path(snap).expect("snapshot path");
        assert_eq!(snap_path, dir.path().join("snapshots").join(format!("{snap}.raw")));
        assert_eq!(std::fs::read(&snap_path).expect("read snapshot"), original, "the same bytes");
        assert!(allocated(&snap_path) < 16 << 20, "holes kept: {} bytes allocated", allocated(&snap_path));

        // The volume changes afterwards; the snapshot does not.
        write_at(&path, 0, b"BOOT SECTOR");
        assert_eq!(&std::fs::read(&snap_path).expect("read")[..11], b"boot sector");

        // A volume from the snapshot (bigger), and a clone of the volume: same bytes, grown.
        s.create_from(&spec(from_snap, 3), CloneSource::Snapshot(snap)).expect("from snapshot");
        let made = std::fs::read(s.path(from_snap).expect("path")).expect("read");
        assert_eq!(made.len() as u64, 3 * GIB);
        assert_eq!(&made[..original.len()], &original[..]);
        assert!(made[original.len()..].iter().all(|b| *b == 0));
        drop(made);
        s.create_from(&spec(from_snap, 3), CloneSource::Snapshot(snap)).expect("again: already made");
        s.create_from(&spec(clone, 2), CloneSource::Volume(vol)).expect("clone");
        assert_eq!(std::fs::read(s.path(clone).expect("path")).expect("read"), std::fs::read(&path).expect("read"));
        assert!(matches!(
            s.create_from(&spec("d1d2d3d4-0000-4000-8000-000000000001", 1), CloneSource::Snapshot(vol)),
            Err(StorageError::MissingSnapshot(_))
        ));

        // Deleting the (last) snapshot leaves the volume's data alone.
        let before = std::fs::read(&path).expect("read");
        s.snapshot_delete(snap).expect("delete snapshot");
        s.snapshot_delete(snap).expect("delete again");
        assert!(!snap_path.exists());
        assert_eq!(std::fs::read(&path).expect("read"), before);
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    }

    #[test]
    fn a_revert_puts_the_snapshots_bytes_back_whole_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileStorage::open(dir.path()).expect("open");
        let (vol, snap) = ("5b6c7d8e-9f00-4a1b-8c2d-3e4f5a6b7c8d", "6c7d8e9f-0a1b-4c2d-9e3f-4a5b6c7d8e9f");
        s.create(&spec(vol, 1)).expect("create");
        let path = s.path(vol).expect("path");
        write_at(&path, 0, b"before");
        write_at(&path, GIB - 4, b"end!");
        s.snapshot_create(vol, snap).expect("snapshot");
        let snap_path = s.snapshot_path(snap).expect("snapshot path");
        let snapshot = std::fs::read(&snap_path).expect("read snapshot");

        // Written over (and where the snapshot has a hole) after the snapshot.
        write_at(&path, 0, b"AFTER!");
        write_at(&path, 300 << 20, &[0x5a; 1 << 20]);
        assert_ne!(std::fs::read(&path).expect("read"), snapshot);

        s.revert(vol, snap).expect("revert");
        assert_eq!(std::fs::read(&path).expect("read"), snapshot, "the volume's bytes are the snapshot's");
        assert!(allocated(&path) < 16 << 20, "holes kept: {} bytes allocated", allocated(&path));
        s.revert(vol, snap).expect("revert again (a redelivery)");
        assert_eq!(std::fs::read(&path).expect("read"), snapshot);
        assert_eq!(std::fs::read(&snap_path).expect("read"), snapshot, "the snapshot stays as it was");
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));

        let missing = "7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a";
        assert!(matches!(s.revert(vol, missing), Err(StorageError::MissingSnapshot(_))));
        assert!(matches!(s.revert(missing, snap), Err(StorageError::Missing(_))));
    }

    #[test]
    fn exports_are_the_volume_raw_or_converted_to_qcow2() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileStorage::open(dir.path()).expect("open");
        let vol = "5e5e5e5e-1111-4222-8333-444455556666";
        s.create(&spec(vol, 1)).expect("create");
        let path = s.path(vol).expect("path");
        write_at(&path, 12345, b"exported bytes");
        let mut raw = Vec::new();
        let e = s.export(vol, "raw").expect("raw");
        assert_eq!(e.len, GIB);
        e.reader.take(GIB + 1).read_to_end(&mut raw).expect("read");
        assert_eq!(raw, std::fs::read(&path).expect("read"));
        drop(raw);

        let e = s.export(vol, "qcow2").expect("qcow2");
        let mut q = Vec::new();
        let len = e.len;
        e.reader.take(GIB).read_to_end(&mut q).expect("read");
        assert_eq!(q.len() as u64, len);
        assert!(len < 16 << 20, "a mostly empty volume converts small: {len}");
        assert_eq!(&q[..4], b"QFI\xfb");
        // Converted back by qemu-img, it is the volume.
        let qfile = dir.path().join("back.qcow2");
        std::fs::write(&qfile, &q).expect("write");
        let back = dir.path().join("back.raw");
        let ok = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&qfile)
            .arg(&back)
            .status()
            .expect("qemu-img");
        assert!(ok.success());
        assert_eq!(std::fs::read(&back).expect("read"), std::fs::read(&path).expect("read"));
        assert!(leftovers(dir.path()).is_empty(), "the converted file is gone: {:?}", leftovers(dir.path()));
        assert!(matches!(s.export(vol, "vmdk"), Err(StorageError::ExportFormat(_))));
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
