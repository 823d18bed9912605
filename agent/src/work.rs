//! Typed work: a validated [`WorkItem`], and the durable log of work already finished.
//!
//! The server offers a work item until its last event is acknowledged, so the agent can see
//! the same id again (after a lost acknowledgement, or after its own restart). The [`WorkLog`]
//! keeps the final event of every finished item on disk (fsync'd) and a repeat gets that event
//! again instead of a second execution.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use meridian_common::agent::{Action, WorkEvent, WorkItem};
use uuid::Uuid;

use crate::lifecycle::Op;

/// A work item whose instance id is a UUID (it becomes the domain's UUID).
#[derive(Clone, Debug)]
pub struct Work {
    pub id: String,
    pub instance_id: Uuid,
    pub attempt: u32,
    pub action: Action,
}

impl Work {
    /// Validates a work item from the wire.
    pub fn from_item(item: WorkItem) -> Result<Work, String> {
        let instance_id = Uuid::parse_str(&item.instance_id)
            .map_err(|_| format!("instance id {:?} is not a UUID", item.instance_id))?;
        Ok(Work { id: item.id, instance_id, attempt: item.attempt, action: item.action })
    }

    pub fn op(&self) -> Op {
        op_of(&self.action)
    }
}

pub fn op_of(action: &Action) -> Op {
    match action {
        Action::Build(_) => Op::Build,
        Action::Stop => Op::Stop,
        Action::Start => Op::Start,
        Action::Reboot { hard: false } => Op::RebootSoft,
        Action::Reboot { hard: true } => Op::RebootHard,
        Action::Delete => Op::Delete,
        Action::ConsoleLog { .. } => Op::ConsoleLog,
    }
}

/// Final events of finished work, one small JSON file per work id.
#[derive(Debug)]
pub struct WorkLog {
    dir: PathBuf,
}

/// How long finished work is remembered; the server stops offering an item long before.
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

impl WorkLog {
    /// Opens (creating) the log directory and forgets entries older than a month.
    pub fn open(dir: &Path) -> std::io::Result<WorkLog> {
        std::fs::create_dir_all(dir)?;
        let now = SystemTime::now();
        for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > KEEP);
            let name = entry.file_name();
            let partial = name.to_string_lossy().ends_with(".tmp");
            if old || partial {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(WorkLog { dir: dir.to_path_buf() })
    }

    fn path(&self, work_id: &str) -> PathBuf {
        let plain = !work_id.is_empty()
            && work_id.len() <= 100
            && work_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let name = if plain {
            format!("{work_id}.json")
        } else {
            format!("h-{}.json", hex::encode(Md5::digest(work_id.as_bytes())))
        };
        self.dir.join(name)
    }

    /// The final event recorded for a work id, if it finished before.
    pub fn get(&self, work_id: &str) -> Option<WorkEvent> {
        let bytes = std::fs::read(self.path(work_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Durably records a work item's final event (write, fsync, rename, fsync the directory).
    pub fn record(&self, work_id: &str, event: &WorkEvent) -> std::io::Result<()> {
        use std::io::Write as _;
        let path = self.path(work_id);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(event).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_common::agent::PowerState;

    #[test]
    fn finished_work_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = WorkLog::open(dir.path()).expect("open");
        assert!(log.get("w1").is_none());
        log.record("w1", &WorkEvent::Done { power_state: PowerState::Running, console: None }).expect("record");
        log.record("odd/../id", &WorkEvent::Failed { message: "m".into(), details: "d".into(), retryable: false })
            .expect("record odd id");
        let log = WorkLog::open(dir.path()).expect("reopen");
        assert!(matches!(log.get("w1"), Some(WorkEvent::Done { power_state: PowerState::Running, .. })));
        assert!(matches!(log.get("odd/../id"), Some(WorkEvent::Failed { .. })));
        assert!(log.get("w2").is_none());
        // Every file stays inside the log directory.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);
    }

    #[test]
    fn work_needs_a_uuid_instance() {
        let item = |id: &str| WorkItem {
            id: "w".into(),
            instance_id: id.into(),
            attempt: 1,
            action: Action::Reboot { hard: true },
        };
        let w = Work::from_item(item("0e7c1c1e-1111-4222-8333-444455556666")).expect("valid");
        assert_eq!(w.op(), Op::RebootHard);
        assert!(Work::from_item(item("not-a-uuid")).is_err());
    }
}
