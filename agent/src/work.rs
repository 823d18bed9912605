//! Typed work: a validated [`WorkItem`], and the durable log of work already finished.
//!
//! The server offers a work item until its last event is acknowledged, so the agent can see
//! the same id again (after a lost acknowledgement, or after its own restart). The [`WorkLog`]
//! keeps the final event of every finished item on disk (fsync'd) and a repeat gets that event
//! again instead of a second execution.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

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
        Action::Pause => Op::Pause,
        Action::Unpause => Op::Unpause,
        Action::Suspend => Op::Suspend,
        Action::Resume => Op::Resume,
        Action::ConsoleLog { .. } => Op::ConsoleLog,
        Action::Console { .. } => Op::Console,
        Action::VolumeAttach { .. } => Op::AttachVolume,
        Action::VolumeDetach { .. } => Op::DetachVolume,
        Action::ImageCreate { .. } => Op::ImageCreate,
        Action::Rebuild(_) => Op::Rebuild,
        Action::Rescue { .. } => Op::Rescue,
        Action::Unrescue => Op::Unrescue,
        Action::InterfaceAttach { .. } => Op::AttachInterface,
        Action::InterfaceDetach { .. } => Op::DetachInterface,
        Action::Diagnostics => Op::Diagnostics,
        Action::MigrateOut { .. }
        | Action::ResizeLocal { .. }
        | Action::ResizeLocalRevert { .. }
        | Action::MigrateRevert { .. }
        | Action::LiveMigrateOut { .. } => Op::Migrate,
        Action::MigrateIn { .. } | Action::LiveMigrateIn { .. } => Op::MigrateIn,
        Action::MigrateCleanup { .. } => Op::MigrateFinish,
        Action::VolumeCreate { .. }
        | Action::VolumeExtend { .. }
        | Action::VolumeDelete { .. }
        | Action::SnapshotCreate { .. }
        | Action::SnapshotDelete { .. }
        | Action::VolumeUploadImage { .. }
        | Action::VolumeRevert { .. } => Op::Volume,
    }
}

/// Final events of finished work: an append-only file of JSON lines (`log.jsonl`), one line
/// per finished item, fsync'd before the event is reported; held in memory for lookups.
///
/// One file rather than one per item: creating a file per build costs an inode, a rename and
/// a directory fsync, which on a busy host was a measurable share of a build's CPU.
#[derive(Debug)]
pub struct WorkLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    entries: HashMap<String, Entry>,
    /// Lines in the file (compaction rewrites it when most are stale).
    lines: usize,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    work_id: String,
    /// Seconds since the epoch when the item finished.
    at: u64,
    event: WorkEvent,
}

/// How long finished work is remembered; the server stops offering an item long before.
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// The file is rewritten when it holds this many lines more than live entries.
const COMPACT_SLACK: usize = 4096;
const FILE: &str = "log.jsonl";

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl WorkLog {
    /// Opens (creating) the log, forgets entries older than a month, and takes in the
    /// one-file-per-item records older agents wrote.
    pub fn open(dir: &Path) -> std::io::Result<WorkLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let mut entries = HashMap::new();
        let mut lines = 0;
        match std::fs::read(&path) {
            // A torn last line (a crash mid-append, before the event was reported) is skipped.
            Ok(bytes) => {
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    lines += 1;
                    if let Ok(e) = serde_json::from_slice::<Entry>(line) {
                        entries.insert(e.work_id.clone(), e);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let legacy = legacy_files(dir)?;
        for e in legacy.iter().filter_map(|path| legacy_entry(path)) {
            entries.entry(e.work_id.clone()).or_insert(e);
        }
        let cutoff = epoch_secs(SystemTime::now()).saturating_sub(KEEP.as_secs());
        entries.retain(|_, e| e.at >= cutoff);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let log = WorkLog { dir: dir.to_path_buf(), inner: Mutex::new(Inner { file, entries, lines }) };
        {
            let mut inner = log.lock();
            if !legacy.is_empty() || inner.lines > inner.entries.len() {
                log.compact(&mut inner)?;
            }
        }
        // Their entries are in the (compacted, synced) log now.
        for path in legacy {
            let _ = std::fs::remove_file(path);
        }
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The final event recorded for a work id, if it finished before.
    pub fn get(&self, work_id: &str) -> Option<WorkEvent> {
        self.lock().entries.get(work_id).map(|e| e.event.clone())
    }

    /// Durably records a work item's final event (one appended line, then fdatasync).
    pub fn record(&self, work_id: &str, event: &WorkEvent) -> std::io::Result<()> {
        let entry = Entry { work_id: work_id.to_string(), at: epoch_secs(SystemTime::now()), event: event.clone() };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut inner = self.lock();
        inner.file.write_all(&line)?;
        inner.file.sync_data()?;
        inner.lines += 1;
        inner.entries.insert(entry.work_id.clone(), entry);
        if inner.lines > inner.entries.len() + COMPACT_SLACK {
            self.compact(&mut inner)?;
        }
        Ok(())
    }

    /// Rewrites the file with only the live entries (a new file, fsync'd, renamed over).
    fn compact(&self, inner: &mut Inner) -> std::io::Result<()> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut out = Vec::new();
        let mut live: Vec<&Entry> = inner.entries.values().collect();
        live.sort_by(|a, b| (a.at, &a.work_id).cmp(&(b.at, &b.work_id)));
        for e in live {
            out.extend(serde_json::to_vec(e).map_err(std::io::Error::other)?);
            out.push(b'\n');
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        inner.file = OpenOptions::new().append(true).open(&path)?;
        inner.lines = inner.entries.len();
        Ok(())
    }
}

/// Files of the earlier layout: `<work id>.json` records (`h-<md5>.json` for odd ids) and
/// `.tmp` files of interrupted writes.
fn legacy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") || (name.ends_with(".tmp") && name != format!("{FILE}.tmp")) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// The entry a legacy file holds, its mtime as the finish time. Hashed names cannot be
/// mapped back to their work id, and partial writes hold nothing: both are dropped.
fn legacy_entry(path: &Path) -> Option<Entry> {
    let work_id = path.file_name()?.to_str()?.strip_suffix(".json")?;
    if work_id.starts_with("h-") {
        return None;
    }
    let at = std::fs::metadata(path).and_then(|m| m.modified()).map(epoch_secs).unwrap_or(0);
    let event = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(Entry { work_id: work_id.to_string(), at, event })
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
        log.record(
            "w1",
            &WorkEvent::Done { power_state: PowerState::Running, console: None, config_drive: false, data: None },
        )
        .expect("record");
        log.record("odd/../id", &WorkEvent::Failed { message: "m".into(), details: "d".into(), retryable: false })
            .expect("record odd id");
        let log = WorkLog::open(dir.path()).expect("reopen");
        assert!(matches!(log.get("w1"), Some(WorkEvent::Done { power_state: PowerState::Running, .. })));
        assert!(matches!(log.get("odd/../id"), Some(WorkEvent::Failed { .. })));
        assert!(log.get("w2").is_none());
        // One file, whatever the ids.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_log_stays_appendable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = WorkLog::open(dir.path()).expect("open");
        log.record(
            "w1",
            &WorkEvent::Done { power_state: PowerState::Running, console: None, config_drive: false, data: None },
        )
        .expect("record");
        drop(log);
        // A crash in the middle of the next append.
        let mut f = OpenOptions::new().append(true).open(dir.path().join(FILE)).expect("file");
        f.write_all(b"{\"work_id\":\"w2\",\"at\":1").expect("torn write");
        drop(f);
        let log = WorkLog::open(dir.path()).expect("reopen");
        assert!(log.get("w1").is_some());
        assert!(log.get("w2").is_none());
        log.record(
            "w3",
            &WorkEvent::Done { power_state: PowerState::Shutdown, console: None, config_drive: false, data: None },
        )
        .expect("record");
        let log = WorkLog::open(dir.path()).expect("reopen again");
        assert!(log.get("w1").is_some());
        assert!(matches!(log.get("w3"), Some(WorkEvent::Done { power_state: PowerState::Shutdown, .. })));
    }

    #[test]
    fn records_of_the_one_file_per_item_layout_are_taken_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let done = WorkEvent::Done { power_state: PowerState::Running, console: None, config_drive: false, data: None };
        std::fs::write(dir.path().join("w-old.json"), serde_json::to_vec(&done).expect("json")).expect("write");
        std::fs::write(dir.path().join("w-partial.tmp"), b"{").expect("write");
        let log = WorkLog::open(dir.path()).expect("open");
        assert!(matches!(log.get("w-old"), Some(WorkEvent::Done { .. })));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![FILE.to_string()]);
        assert!(WorkLog::open(dir.path()).expect("reopen").get("w-old").is_some());
    }

    #[test]
    fn compaction_keeps_the_latest_event_of_every_item() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = WorkLog::open(dir.path()).expect("open");
        let failed = WorkEvent::Failed { message: "m".into(), details: "d".into(), retryable: true };
        let done = WorkEvent::Done { power_state: PowerState::Running, console: None, config_drive: false, data: None };
        for i in 0..(COMPACT_SLACK + 10) {
            log.record(&format!("w{}", i % 3), if i % 2 == 0 { &failed } else { &done }).expect("record");
        }
        let lines = std::fs::read(dir.path().join(FILE))
            .expect("read")
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        assert!(lines < COMPACT_SLACK, "compacted: {lines} lines");
        let last = COMPACT_SLACK + 9;
        let log = WorkLog::open(dir.path()).expect("reopen");
        for k in 0..3 {
            let i = (0..=last).rev().find(|i| i % 3 == k).expect("some index");
            let want_done = i % 2 == 1;
            assert_eq!(matches!(log.get(&format!("w{k}")), Some(WorkEvent::Done { .. })), want_done, "w{k}");
        }
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
