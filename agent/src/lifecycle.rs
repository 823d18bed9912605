//! The instance lifecycle as the agent sees it: the state of the domain on this host, the
//! operation asked for, and whether that operation may run.
//!
//! Every pair is decided here, in one table: the operation runs ([`Decision::Proceed`]), its
//! outcome already holds ([`Decision::AlreadyDone`], which makes repeated work idempotent), or it
//! is refused with a reason ([`Rejected`]).

use meridian_common::agent::PowerState;

use crate::hypervisor::DomainState;

/// The state of an instance's domain on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// No domain on this host.
    Absent,
    Running,
    Paused,
    /// The guest is shutting down.
    ShuttingDown,
    Shutoff,
    Crashed,
    /// Suspended by the guest's own power management (S3/S4).
    Suspended,
    /// Shut off with its memory saved (managed save: what a user's suspend makes).
    Saved,
}

impl InstanceState {
    pub const ALL: [InstanceState; 8] = [
        InstanceState::Absent,
        InstanceState::Running,
        InstanceState::Paused,
        InstanceState::ShuttingDown,
        InstanceState::Shutoff,
        InstanceState::Crashed,
        InstanceState::Suspended,
        InstanceState::Saved,
    ];

    pub fn from_domain(state: Option<DomainState>) -> InstanceState {
        match state {
            None => InstanceState::Absent,
            Some(DomainState::NoState | DomainState::Running | DomainState::Blocked) => InstanceState::Running,
            Some(DomainState::Paused) => InstanceState::Paused,
            Some(DomainState::ShuttingDown) => InstanceState::ShuttingDown,
            Some(DomainState::Shutoff) => InstanceState::Shutoff,
            Some(DomainState::Crashed) => InstanceState::Crashed,
            Some(DomainState::Suspended) => InstanceState::Suspended,
            Some(DomainState::Saved) => InstanceState::Saved,
        }
    }

    /// Nova's power state for this state (libvirt driver mapping: a managed-saved domain is
    /// shut off, so SHUTDOWN, as Nova reports a suspended server).
    pub fn power_state(self) -> PowerState {
        match self {
            InstanceState::Absent => PowerState::NoState,
            InstanceState::Running => PowerState::Running,
            InstanceState::Paused => PowerState::Paused,
            InstanceState::ShuttingDown | InstanceState::Shutoff | InstanceState::Saved => PowerState::Shutdown,
            InstanceState::Crashed => PowerState::Crashed,
            InstanceState::Suspended => PowerState::Suspended,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            InstanceState::Absent => "not on this host",
            InstanceState::Running => "running",
            InstanceState::Paused => "paused",
            InstanceState::ShuttingDown => "shutting down",
            InstanceState::Shutoff => "shut off",
            InstanceState::Crashed => "crashed",
            InstanceState::Suspended => "suspended",
            InstanceState::Saved => "saved (suspended)",
        }
    }
}

/// An operation on an instance, without its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Build,
    Stop,
    Start,
    RebootSoft,
    RebootHard,
    Delete,
    ConsoleLog,
    /// An interactive console (serial or VNC).
    Console,
    /// Plug a volume into the domain (live and persistent).
    AttachVolume,
    /// Unplug a volume from the domain.
    DetachVolume,
    /// Work on a volume alone (create, extend, delete): no domain involved.
    Volume,
    Pause,
    Unpause,
    /// Save the guest's memory and stop it (managed save).
    Suspend,
    /// Restore a saved guest.
    Resume,
    /// Copy the root disk to an image (snapshot, backup, shelve).
    ImageCreate,
    /// Replace the root disk from an image and boot again (rebuild; evacuate's build).
    Rebuild,
    /// Boot a rescue image with the root disk attached.
    Rescue,
    /// Boot the instance's own definition after a rescue.
    Unrescue,
    /// Hot-plug a port.
    AttachInterface,
    /// Unplug a port.
    DetachInterface,
    /// Read the domain's diagnostics.
    Diagnostics,
    /// Work on the domain a migration moves or resizes (send its disk, resize it in place,
    /// start it again after a revert): needs the domain.
    Migrate,
    /// Receive a migrated instance (its disk through the relay) and define it here.
    MigrateIn,
    /// End a migration on this host (remove what is left, or the copy kept for a revert).
    MigrateFinish,
}

impl Op {
    pub const ALL: [Op; 25] = [
        Op::Build,
        Op::Stop,
        Op::Start,
        Op::RebootSoft,
        Op::RebootHard,
        Op::Delete,
        Op::ConsoleLog,
        Op::Console,
        Op::AttachVolume,
        Op::DetachVolume,
        Op::Volume,
        Op::Pause,
        Op::Unpause,
        Op::Suspend,
        Op::Resume,
        Op::ImageCreate,
        Op::Rebuild,
        Op::Rescue,
        Op::Unrescue,
        Op::AttachInterface,
        Op::DetachInterface,
        Op::Diagnostics,
        Op::Migrate,
        Op::MigrateIn,
        Op::MigrateFinish,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Build => "build",
            Op::Stop => "stop",
            Op::Start => "start",
            Op::RebootSoft => "soft reboot",
            Op::RebootHard => "hard reboot",
            Op::Delete => "delete",
            Op::ConsoleLog => "console log",
            Op::Console => "console",
            Op::AttachVolume => "attach a volume to",
            Op::DetachVolume => "detach a volume from",
            Op::Volume => "volume work",
            Op::Pause => "pause",
            Op::Unpause => "unpause",
            Op::Suspend => "suspend",
            Op::Resume => "resume",
            Op::ImageCreate => "snapshot",
            Op::Rebuild => "rebuild",
            Op::Rescue => "rescue",
            Op::Unrescue => "unrescue",
            Op::AttachInterface => "attach an interface to",
            Op::DetachInterface => "detach an interface from",
            Op::Diagnostics => "read the diagnostics of",
            Op::Migrate => "migrate or resize",
            Op::MigrateIn => "receive a migrated copy of",
            Op::MigrateFinish => "finish the migration of",
        }
    }
}

/// What to do with an operation in a state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Carry the operation out.
    Proceed,
    /// The operation's outcome already holds: report success without touching anything.
    AlreadyDone,
    Reject(Rejected),
}

/// An operation that is illegal in the instance's current state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} an instance that is {}: {reason}", op.name(), state.describe())]
pub struct Rejected {
    pub op: Op,
    pub state: InstanceState,
    pub reason: &'static str,
}

/// The transition table.
pub fn decide(state: InstanceState, op: Op) -> Decision {
    use Decision::{AlreadyDone, Proceed};
    use InstanceState as S;
    let reject = |reason| Decision::Reject(Rejected { op, state, reason });
    match (state, op) {
        // Volumes: a domain that is gone has no volume plugged in any more.
        (S::Absent, Op::AttachVolume) => reject("there is no domain to attach the volume to"),
        (_, Op::AttachVolume) => Proceed,
        (S::Absent, Op::DetachVolume) => AlreadyDone,
        (_, Op::DetachVolume) | (_, Op::Volume) => Proceed,
        // Build: a repeated build of an existing domain is done; a build interrupted between
        // define and start finishes by starting it.
        (S::Absent, Op::Build) => Proceed,
        (S::Shutoff, Op::Build) => Proceed,
        (S::Running | S::Paused | S::ShuttingDown | S::Crashed | S::Suspended | S::Saved, Op::Build) => AlreadyDone,

        // Stop (a saved guest's memory is thrown away: it is then simply off).
        (S::Absent, Op::Stop) => reject("there is no domain to stop"),
        (S::Shutoff, Op::Stop) => AlreadyDone,
        (S::Running | S::Paused | S::ShuttingDown | S::Crashed | S::Suspended | S::Saved, Op::Stop) => Proceed,

        // Start.
        (S::Absent, Op::Start) => reject("there is no domain to start"),
        (S::Running, Op::Start) => AlreadyDone,
        (S::Shutoff | S::Crashed, Op::Start) => Proceed,
        (S::Paused, Op::Start) => reject("unpause it instead"),
        (S::ShuttingDown, Op::Start) => reject("wait until it is shut off"),
        (S::Suspended | S::Saved, Op::Start) => reject("resume it instead"),

        // Pause freezes a running guest; unpause lets a paused one go on.
        (S::Running, Op::Pause) => Proceed,
        (S::Paused, Op::Pause) => AlreadyDone,
        (S::Absent, Op::Pause | Op::Unpause) => reject("there is no domain"),
        (S::ShuttingDown | S::Shutoff | S::Crashed | S::Suspended | S::Saved, Op::Pause) => {
            reject("only a running guest can be paused")
        }
        (S::Paused, Op::Unpause) => Proceed,
        (S::Running, Op::Unpause) => AlreadyDone,
        (S::ShuttingDown | S::Shutoff | S::Crashed | S::Suspended | S::Saved, Op::Unpause) => {
            reject("only a paused guest can be unpaused")
        }

        // Suspend saves a running (or paused) guest's memory; resume restores it.
        (S::Running | S::Paused, Op::Suspend) => Proceed,
        (S::Saved, Op::Suspend) => AlreadyDone,
        (S::Absent, Op::Suspend | Op::Resume) => reject("there is no domain"),
        (S::ShuttingDown | S::Shutoff | S::Crashed | S::Suspended, Op::Suspend) => {
            reject("only a running guest can be suspended")
        }
        (S::Saved, Op::Resume) => Proceed,
        (S::Running, Op::Resume) => AlreadyDone,
        (S::Paused | S::ShuttingDown | S::Shutoff | S::Crashed | S::Suspended, Op::Resume) => {
            reject("there is no saved guest to resume")
        }

        // Soft reboot needs a guest that is up to ask.
        (S::Absent, Op::RebootSoft) => reject("there is no domain to reboot"),
        (S::Running, Op::RebootSoft) => Proceed,
        (S::Shutoff, Op::RebootSoft) => reject("a stopped guest cannot reboot itself; start it or hard reboot"),
        (S::Paused | S::Suspended | S::Saved, Op::RebootSoft) => {
            reject("the guest cannot run its reboot; use a hard reboot")
        }
        (S::ShuttingDown, Op::RebootSoft) => reject("wait until it is shut off"),
        (S::Crashed, Op::RebootSoft) => reject("a crashed guest needs a hard reboot"),

        // Hard reboot power-cycles from any state a domain exists in (a saved guest boots
        // afresh, its saved memory thrown away).
        (S::Absent, Op::RebootHard) => reject("there is no domain to reboot"),
        (_, Op::RebootHard) => Proceed,

        // Delete: always; deleting what is gone is done (files are still swept).
        (_, Op::Delete) => Proceed,

        // Console log: any existing domain.
        (S::Absent, Op::ConsoleLog) => reject("there is no console"),
        (_, Op::ConsoleLog) => Proceed,

        // Interactive console: only a guest that runs has one to attach to.
        (S::Running | S::Paused, Op::Console) => Proceed,
        (S::Absent, Op::Console) => reject("there is no domain"),
        (S::ShuttingDown | S::Shutoff | S::Crashed | S::Suspended | S::Saved, Op::Console) => {
            reject("the guest is not running")
        }

        // Snapshot: the disk of any domain that is not half-way through a shutdown.
        (S::Absent, Op::ImageCreate) => reject("there is no disk to copy"),
        (S::ShuttingDown, Op::ImageCreate) => reject("wait until it is shut off"),
        (_, Op::ImageCreate) => Proceed,

        // Rebuild: from any state; on a host without the domain it is a build (evacuate).
        (_, Op::Rebuild) => Proceed,

        // Rescue and unrescue need the domain they replace or restore.
        (S::Absent, Op::Rescue | Op::Unrescue) => reject("there is no domain"),
        (_, Op::Rescue | Op::Unrescue) => Proceed,

        // Interfaces: plugged into any domain; what is gone has nothing plugged in.
        (S::Absent, Op::AttachInterface) => reject("there is no domain to attach the interface to"),
        (S::Absent, Op::DetachInterface) => AlreadyDone,
        (_, Op::AttachInterface | Op::DetachInterface) => Proceed,

        (S::Absent, Op::Diagnostics) => reject("there is no domain"),
        (_, Op::Diagnostics) => Proceed,

        // Migrations: the source's work needs its domain; cleaning up runs whatever is there.
        (S::Absent, Op::Migrate) => reject("there is no domain to migrate or resize"),
        (_, Op::Migrate) => Proceed,
        // A repeat of a migration's arrival that already runs here is done (its disk is not
        // replaced under the guest); a defined but stopped one is received again.
        (S::Absent | S::Shutoff, Op::MigrateIn) => Proceed,
        (_, Op::MigrateIn) => AlreadyDone,
        (_, Op::MigrateFinish) => Proceed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P: proceed, D: already done, R: rejected. Rows: states in `InstanceState::ALL` order;
    /// columns: build, stop, start, soft reboot, hard reboot, delete, console log, console,
    /// attach volume, detach volume, volume work, pause, unpause, suspend, resume; then
    /// snapshot, rebuild, rescue, unrescue, attach interface, detach interface, diagnostics; then
    /// migrate, migrate in, migrate finish.
    #[rustfmt::skip]
    const TABLE: [(InstanceState, [char; 25]); 8] = [
        (InstanceState::Absent, ['P', 'R', 'R', 'R', 'R', 'P', 'R', 'R', 'R', 'D', 'P', 'R', 'R', 'R', 'R',
            'R', 'P', 'R', 'R', 'R', 'D', 'R', 'R', 'P', 'P']),
        (InstanceState::Running, ['D', 'P', 'D', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'D', 'P', 'D',
            'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'D', 'P']),
        (InstanceState::Paused, ['D', 'P', 'R', 'R', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'D', 'P', 'P', 'R',
            'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'D', 'P']),
        (InstanceState::ShuttingDown, ['D', 'P', 'R', 'R', 'P', 'P', 'P', 'R', 'P', 'P', 'P', 'R', 'R', 'R', 'R',
            'R', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'D', 'P']),
        (InstanceState::Shutoff, ['P', 'D', 'P', 'R', 'P', 'P', 'P', 'R', 'P', 'P', 'P', 'R', 'R', 'R', 'R',
            'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P']),
        (InstanceState::Crashed, ['D', 'P', 'P', 'R', 'P', 'P', 'P', 'R', 'P', 'P', 'P', 'R', 'R', 'R', 'R',
            'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'D', 'P']),
        (InstanceState::Suspended, ['D', 'P', 'R', 'R', 'P', 'P', 'P', 'R', 'P', 'P', 'P', 'R', 'R', 'R', 'R',
            'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'D', 'P']),
        (InstanceState::Saved, ['D', 'P', 'R', 'R', 'P', 'P', 'P', 'R', 'P', 'P', 'P', 'R', 'R', 'D', 'P',
            'P', 'P', 'P', 'P', 'P', 'P', 'P', 'P', 'D', 'P']),
    ];

    #[test]
    fn every_state_and_operation_pair() {
        let mut seen = 0;
        for (state, row) in TABLE {
            for (op, want) in Op::ALL.into_iter().zip(row) {
                let got = decide(state, op);
                let code = match &got {
                    Decision::Proceed => 'P',
                    Decision::AlreadyDone => 'D',
                    Decision::Reject(r) => {
                        assert_eq!((r.op, r.state), (op, state));
                        assert!(!r.reason.is_empty());
                        'R'
                    }
                };
                assert_eq!(code, want, "{state:?} × {op:?} gave {got:?}");
                seen += 1;
            }
        }
        assert_eq!(seen, InstanceState::ALL.len() * Op::ALL.len());
        let rows: Vec<_> = TABLE.iter().map(|(s, _)| *s).collect();
        assert_eq!(rows, InstanceState::ALL);
    }

    #[test]
    fn rejections_say_what_and_why() {
        let Decision::Reject(r) = decide(InstanceState::Paused, Op::Start) else {
            panic!("paused start must be rejected");
        };
        assert_eq!(r.to_string(), "cannot start an instance that is paused: unpause it instead");
    }

    #[test]
    fn power_states_follow_nova() {
        assert_eq!(InstanceState::Shutoff.power_state(), PowerState::Shutdown);
        assert_eq!(InstanceState::ShuttingDown.power_state(), PowerState::Shutdown);
        assert_eq!(InstanceState::Running.power_state(), PowerState::Running);
        assert_eq!(InstanceState::Paused.power_state(), PowerState::Paused);
        assert_eq!(InstanceState::Saved.power_state(), PowerState::Shutdown);
        assert_eq!(InstanceState::from_domain(Some(DomainState::Saved)), InstanceState::Saved);
        assert_eq!(InstanceState::from_domain(Some(DomainState::Blocked)), InstanceState::Running);
        assert_eq!(InstanceState::from_domain(None), InstanceState::Absent);
    }
}
