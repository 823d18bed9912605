//! The host's credential on disk: `STATE_DIR/host-credential`, mode 0600, replaced atomically
//! (a temporary file in the same directory, flushed, renamed over the old one, the directory
//! flushed), so a crash leaves the old credential or the new one, never a torn file.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Where the credential lives in a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("host-credential")
}

/// The stored credential, if there is one.
pub fn load(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the stored credential (readable by the agent's user only).
pub fn store(path: &Path, credential: &str) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("the credential path has no directory"))?;
    let tmp = dir.join(format!(".host-credential.{}.tmp", uuid::Uuid::new_v4()));
    let written = (|| {
        // Created 0600: the secret is never readable by others, not even for a moment.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(credential.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn stored_private_and_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path(dir.path());
        assert_eq!(load(&p).expect("load"), None);
        store(&p, "first").expect("store");
        store(&p, "second").expect("replace");
        assert_eq!(load(&p).expect("load").as_deref(), Some("second"));
        assert_eq!(std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").filter_map(Result::ok).collect();
        assert_eq!(left.len(), 1, "no temporary files stay behind");
    }
}
