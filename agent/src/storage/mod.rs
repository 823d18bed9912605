//! Where volumes' bytes live: the [`Storage`] trait, and its one backend today, sparse raw
//! files in a directory of the agent's state dir ([`file::FileStorage`]).
//!
//! The server never learns where the bytes are: it names a volume and its size, and the backend
//! makes, grows and removes it and says how libvirt reaches it ([`Storage::disk_xml`]). A shared
//! backend (Ceph RBD through libvirt's `<disk type='network'>`) implements the same calls:
//! snapshots and clones map onto RBD's own (`rbd snap create`, `rbd clone`/`rbd cp`), and an
//! export is a reader of the image's bytes (`rbd export`, or `qemu-img convert` from `rbd:`).

pub mod file;

use meridian_common::agent::VolumeSpec;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("volume id {0:?} is not a UUID")]
    BadId(String),
    #[error("cannot create volume {id}")]
    Create {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot extend volume {id}")]
    Extend {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {id} is {have} bytes, larger than the {want} asked for; volumes never shrink")]
    Shrink { id: String, have: u64, want: u64 },
    #[error("cannot write image {image} into volume {id}: {reason}")]
    Import { id: String, image: String, reason: String },
    #[error("volume {0} does not exist on this host")]
    Missing(String),
    #[error("cannot delete volume {id}")]
    Delete {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot snapshot volume {volume} as {snapshot}")]
    Snapshot {
        volume: String,
        snapshot: String,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {0} does not exist on this host")]
    MissingSnapshot(String),
    #[error("cannot delete snapshot {id}")]
    DeleteSnapshot {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy {from} into volume {id}")]
    Clone {
        id: String,
        from: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot revert volume {id} to snapshot {snapshot}")]
    Revert {
        id: String,
        snapshot: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot export volume {id} as {format}")]
    Export {
        id: String,
        format: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot export a volume as {0}: raw and qcow2 only")]
    ExportFormat(String),
}

/// Where a new volume's bytes are copied from ([`Storage::create_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloneSource<'a> {
    /// A snapshot kept on this host.
    Snapshot(&'a str),
    /// Another volume of this host.
    Volume(&'a str),
}

/// A volume's bytes opened for export (an upload to an image): read to the end, `len` bytes.
pub struct Export {
    pub reader: Box<dyn std::io::Read + Send>,
    pub len: u64,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").field("len", &self.len).finish()
    }
}

/// A volume store on this host. Blocking; every call is idempotent (work is at least once).
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// Makes an empty volume of `size_gb`; an existing one of that size is fine.
    fn create(&self, v: &VolumeSpec) -> Result<(), StorageError>;
    /// Grows a volume to `size_gb`; one already that size is fine; never shrinks.
    fn extend(&self, v: &VolumeSpec) -> Result<(), StorageError>;
    /// Removes a volume; a missing one is fine. The caller has checked no domain uses it.
    fn delete(&self, id: &str) -> Result<(), StorageError>;
    /// Whether the volume exists here.
    fn exists(&self, id: &str) -> Result<bool, StorageError>;
    /// What a domain definition's `<source>` names for this volume (a file path, an RBD image
    /// name): how a domain using it is recognised.
    fn locator(&self, id: &str) -> Result<String, StorageError>;
    /// The `<source …/>` element (and driver) of the disk libvirt attaches: what identifies
    /// the volume in a domain definition.
    fn source_xml(&self, id: &str) -> Result<(String, String), StorageError>;
    /// Copies the volume's bytes as snapshot `snapshot_id`, kept on this host; an existing
    /// snapshot is fine. The caller keeps writers away (the guest paused) meanwhile.
    fn snapshot_create(&self, volume_id: &str, snapshot_id: &str) -> Result<(), StorageError>;
    /// Removes a snapshot; a missing one is fine. No volume is touched.
    fn snapshot_delete(&self, snapshot_id: &str) -> Result<(), StorageError>;
    /// Makes volume `v` holding `source`'s bytes, grown to `v.size_gb`; an existing one of
    /// that size is fine (a repeated create).
    fn create_from(&self, v: &VolumeSpec, source: CloneSource<'_>) -> Result<(), StorageError>;
    /// Puts snapshot `snapshot_id`'s bytes back as volume `volume_id`'s, replacing them whole
    /// (never a half-written volume); the snapshot stays. A repeat writes the same bytes again.
    /// The caller has checked no domain uses the volume.
    fn revert(&self, volume_id: &str, snapshot_id: &str) -> Result<(), StorageError>;
    /// Opens the volume's bytes as `disk_format` (`raw` as they are, `qcow2` converted).
    fn export(&self, id: &str, disk_format: &str) -> Result<Export, StorageError>;
    /// Makes a volume of `size_gb` holding the image file `image` (in qemu format `format`),
    /// converted to raw; an existing volume of that size is fine (a repeat). Fails, leaving
    /// nothing, when the image's virtual size exceeds the volume.
    fn create_from_image(&self, v: &VolumeSpec, image: &std::path::Path, format: &str) -> Result<(), StorageError>;
}

/// The `<disk>` element for a volume as device `dev` (virtio): the volume's id as the disk's
/// serial (as Nova sets it, so the guest finds it under /dev/disk/by-id), read-only when asked.
pub fn disk_xml(storage: &dyn Storage, v: &VolumeSpec, dev: &str) -> Result<String, StorageError> {
    let (disk_type, source) = storage.source_xml(&v.id)?;
    let serial: String = v.id.chars().take(20).collect();
    let readonly = if v.readonly { "      <readonly/>\n" } else { "" };
    Ok(format!(
        "<disk type='{disk_type}' device='disk'>\n      <driver name='qemu' type='raw'/>\n      {source}\n      \
         <target dev='{}' bus='virtio'/>\n      <serial>{}</serial>\n{readonly}    </disk>",
        crate::xml::esc(dev),
        crate::xml::esc(&serial)
    ))
}

/// A volume id must be a UUID: it names files and devices.
pub(crate) fn check_id(id: &str) -> Result<uuid::Uuid, StorageError> {
    uuid::Uuid::parse_str(id).map_err(|_| StorageError::BadId(id.to_string()))
}
