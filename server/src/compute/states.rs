//! The instance state machine: Nova's vm_state / task_state values, the API `status` derived
//! from them, and the one table that decides which action is allowed from which state.

use crate::error::ApiError;

/// Nova's `vm_state` values (nova.compute.vm_states), all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmState {
    Building,
    Active,
    Stopped,
    Error,
    Deleted,
    Paused,
    Suspended,
    Rescued,
    Resized,
    SoftDeleted,
    Shelved,
    ShelvedOffloaded,
}

impl VmState {
    pub const ALL: [VmState; 12] = [
        VmState::Building,
        VmState::Active,
        VmState::Stopped,
        VmState::Error,
        VmState::Deleted,
        VmState::Paused,
        VmState::Suspended,
        VmState::Rescued,
        VmState::Resized,
        VmState::SoftDeleted,
        VmState::Shelved,
        VmState::ShelvedOffloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Building => "building",
            VmState::Active => "active",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
            VmState::Deleted => "deleted",
            VmState::Paused => "paused",
            VmState::Suspended => "suspended",
            VmState::Rescued => "rescued",
            VmState::Resized => "resized",
            VmState::SoftDeleted => "soft-delete",
            VmState::Shelved => "shelved",
            VmState::ShelvedOffloaded => "shelved_offloaded",
        }
    }

    pub fn parse(s: &str) -> Option<VmState> {
        VmState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Nova's `task_state` values (nova.compute.task_states) this cloud uses (`None` is "no task").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    Scheduling,
    Networking,
    BlockDeviceMapping,
    Spawning,
    PoweringOff,
    PoweringOn,
    Rebooting,
    RebootPending,
    RebootStarted,
    RebootingHard,
    RebootPendingHard,
    RebootStartedHard,
    Deleting,
    Pausing,
    Unpausing,
    Suspending,
    Resuming,
    ImageSnapshot,
    ImageSnapshotPending,
    ImagePendingUpload,
    ImageUploading,
    ImageBackup,
    UpdatingPassword,
    ResizePrep,
    ResizeMigrating,
    ResizeMigrated,
    ResizeFinish,
    ResizeReverting,
    ResizeConfirming,
    Rebuilding,
    RebuildBlockDeviceMapping,
    RebuildSpawning,
    Migrating,
    Rescuing,
    Unrescuing,
    SoftDeleting,
    Restoring,
    Shelving,
    ShelvingImagePendingUpload,
    ShelvingImageUploading,
    ShelvingOffloading,
    Unshelving,
}

impl TaskState {
    pub const ALL: [TaskState; 42] = [
        TaskState::Scheduling,
        TaskState::Networking,
        TaskState::BlockDeviceMapping,
        TaskState::Spawning,
        TaskState::PoweringOff,
        TaskState::PoweringOn,
        TaskState::Rebooting,
        TaskState::RebootPending,
        TaskState::RebootStarted,
        TaskState::RebootingHard,
        TaskState::RebootPendingHard,
        TaskState::RebootStartedHard,
        TaskState::Deleting,
        TaskState::Pausing,
        TaskState::Unpausing,
        TaskState::Suspending,
        TaskState::Resuming,
        TaskState::ImageSnapshot,
        TaskState::ImageSnapshotPending,
        TaskState::ImagePendingUpload,
        TaskState::ImageUploading,
        TaskState::ImageBackup,
        TaskState::UpdatingPassword,
        TaskState::ResizePrep,
        TaskState::ResizeMigrating,
        TaskState::ResizeMigrated,
        TaskState::ResizeFinish,
        TaskState::ResizeReverting,
        TaskState::ResizeConfirming,
        TaskState::Rebuilding,
        TaskState::RebuildBlockDeviceMapping,
        TaskState::RebuildSpawning,
        TaskState::Migrating,
        TaskState::Rescuing,
        TaskState::Unrescuing,
        TaskState::SoftDeleting,
        TaskState::Restoring,
        TaskState::Shelving,
        TaskState::ShelvingImagePendingUpload,
        TaskState::ShelvingImageUploading,
        TaskState::ShelvingOffloading,
        TaskState::Unshelving,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduling => "scheduling",
            TaskState::Networking => "networking",
            TaskState::BlockDeviceMapping => "block_device_mapping",
            TaskState::Spawning => "spawning",
            TaskState::PoweringOff => "powering-off",
            TaskState::PoweringOn => "powering-on",
            TaskState::Rebooting => "rebooting",
            TaskState::RebootPending => "reboot_pending",
            TaskState::RebootStarted => "reboot_started",
            TaskState::RebootingHard => "rebooting_hard",
            TaskState::RebootPendingHard => "reboot_pending_hard",
            TaskState::RebootStartedHard => "reboot_started_hard",
            TaskState::Deleting => "deleting",
            TaskState::Pausing => "pausing",
            TaskState::Unpausing => "unpausing",
            TaskState::Suspending => "suspending",
            TaskState::Resuming => "resuming",
            TaskState::ImageSnapshot => "image_snapshot",
            TaskState::ImageSnapshotPending => "image_snapshot_pending",
            TaskState::ImagePendingUpload => "image_pending_upload",
            TaskState::ImageUploading => "image_uploading",
            TaskState::ImageBackup => "image_backup",
            TaskState::UpdatingPassword => "updating_password",
            TaskState::ResizePrep => "resize_prep",
            TaskState::ResizeMigrating => "resize_migrating",
            TaskState::ResizeMigrated => "resize_migrated",
            TaskState::ResizeFinish => "resize_finish",
            TaskState::ResizeReverting => "resize_reverting",
            TaskState::ResizeConfirming => "resize_confirming",
            TaskState::Rebuilding => "rebuilding",
            TaskState::RebuildBlockDeviceMapping => "rebuild_block_device_mapping",
            TaskState::RebuildSpawning => "rebuild_spawning",
            TaskState::Migrating => "migrating",
            TaskState::Rescuing => "rescuing",
            TaskState::Unrescuing => "unrescuing",
            TaskState::SoftDeleting => "soft-deleting",
            TaskState::Restoring => "restoring",
            TaskState::Shelving => "shelving",
            TaskState::ShelvingImagePendingUpload => "shelving_image_pending_upload",
            TaskState::ShelvingImageUploading => "shelving_image_uploading",
            TaskState::ShelvingOffloading => "shelving_offloading",
            TaskState::Unshelving => "unshelving",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    fn is_rebuild(self) -> bool {
        matches!(self, TaskState::Rebuilding | TaskState::RebuildBlockDeviceMapping | TaskState::RebuildSpawning)
    }

    fn is_resize(self) -> bool {
        matches!(
            self,
            TaskState::ResizePrep | TaskState::ResizeMigrating | TaskState::ResizeMigrated | TaskState::ResizeFinish
        )
    }
}

/// The API `status` (nova.api.openstack.common._STATE_MAP).
pub fn status(vm: VmState, task: Option<TaskState>) -> &'static str {
    use TaskState as T;
    let rebuild = task.is_some_and(TaskState::is_rebuild);
    let resize = task.is_some_and(TaskState::is_resize);
    match (vm, task) {
        (VmState::Building, _) => "BUILD",
        (VmState::Active, Some(T::Rebooting | T::RebootPending | T::RebootStarted)) => "REBOOT",
        (VmState::Active, Some(T::RebootingHard | T::RebootPendingHard | T::RebootStartedHard)) => "HARD_REBOOT",
        (VmState::Active, Some(T::UpdatingPassword)) => "PASSWORD",
        (VmState::Active, Some(T::Migrating)) => "MIGRATING",
        (VmState::Active | VmState::Stopped | VmState::Error, _) if rebuild => "REBUILD",
        (VmState::Active | VmState::Stopped, _) if resize => "RESIZE",
        (VmState::Active, _) => "ACTIVE",
        (VmState::Stopped, Some(T::RebootingHard | T::RebootPendingHard | T::RebootStartedHard)) => "HARD_REBOOT",
        (VmState::Stopped, _) => "SHUTOFF",
        (VmState::Error, Some(T::RebootingHard | T::RebootPendingHard | T::RebootStartedHard)) => "HARD_REBOOT",
        (VmState::Error, _) => "ERROR",
        (VmState::Deleted, _) => "DELETED",
        (VmState::Paused, Some(T::Migrating)) => "MIGRATING",
        (VmState::Paused, _) => "PAUSED",
        (VmState::Suspended, _) => "SUSPENDED",
        (VmState::Rescued, _) => "RESCUE",
        (VmState::Resized, Some(T::ResizeReverting)) => "REVERT_RESIZE",
        (VmState::Resized, _) => "VERIFY_RESIZE",
        (VmState::SoftDeleted, _) => "SOFT_DELETED",
        (VmState::Shelved, _) => "SHELVED",
        (VmState::ShelvedOffloaded, _) => "SHELVED_OFFLOADED",
    }
}

/// A user action on an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Stop,
    Start,
    RebootSoft,
    RebootHard,
    Delete,
    Pause,
    Unpause,
    Suspend,
    Resume,
    /// `createImage`
    CreateImage,
    /// `createBackup`
    CreateBackup,
    Rebuild,
    Resize,
    ConfirmResize,
    RevertResize,
    /// Cold migration (`migrate`).
    Migrate,
    /// `os-migrateLive`
    LiveMigrate,
    Evacuate,
    Shelve,
    ShelveOffload,
    Unshelve,
    Rescue,
    Unrescue,
    /// `restore` of a soft-deleted server.
    Restore,
    /// `forceDelete` of a soft-deleted server.
    ForceDelete,
    /// `os-interface` attach.
    AttachInterface,
    /// `os-interface` detach.
    DetachInterface,
}

impl Action {
    pub const ALL: [Action; 27] = [
        Action::Stop,
        Action::Start,
        Action::RebootSoft,
        Action::RebootHard,
        Action::Delete,
        Action::Pause,
        Action::Unpause,
        Action::Suspend,
        Action::Resume,
        Action::CreateImage,
        Action::CreateBackup,
        Action::Rebuild,
        Action::Resize,
        Action::ConfirmResize,
        Action::RevertResize,
        Action::Migrate,
        Action::LiveMigrate,
        Action::Evacuate,
        Action::Shelve,
        Action::ShelveOffload,
        Action::Unshelve,
        Action::Rescue,
        Action::Unrescue,
        Action::Restore,
        Action::ForceDelete,
        Action::AttachInterface,
        Action::DetachInterface,
    ];

    /// The name Nova uses in instance actions and in its 409 messages.
    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::RebootSoft | Action::RebootHard => "reboot",
            Action::Delete => "delete",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::CreateImage => "createImage",
            Action::CreateBackup => "createBackup",
            Action::Rebuild => "rebuild",
            Action::Resize => "resize",
            Action::ConfirmResize => "confirmResize",
            Action::RevertResize => "revertResize",
            Action::Migrate => "migrate",
            Action::LiveMigrate => "live-migration",
            Action::Evacuate => "evacuate",
            Action::Shelve => "shelve",
            Action::ShelveOffload => "shelveOffload",
            Action::Unshelve => "unshelve",
            Action::Rescue => "rescue",
            Action::Unrescue => "unrescue",
            Action::Restore => "restore",
            Action::ForceDelete => "forceDelete",
            Action::AttachInterface => "attach_interface",
            Action::DetachInterface => "detach_interface",
        }
    }

    /// The compute API method Nova names in its 409 (`InstanceInvalidState`'s `method`).
    pub fn method(self) -> &'static str {
        match self {
            // The API names the action itself in these 409s (servers.py, create_backup.py).
            Action::CreateImage => "createImage",
            Action::CreateBackup => "createBackup",
            Action::Resize | Action::Migrate => "resize",
            Action::ConfirmResize => "confirm_resize",
            Action::RevertResize => "revert_resize",
            // The API names the action (migrate_server.py), not the compute method.
            Action::LiveMigrate => "os-migrateLive",
            Action::ShelveOffload => "shelveOffload",
            Action::ForceDelete => "force_delete",
            other => other.name(),
        }
    }

    /// The task_state the action sets at once (what clients see first); `None` for the
    /// actions Nova runs without one (confirming a resize, interface hot plug).
    pub fn first_task(self) -> Option<TaskState> {
        Some(match self {
            Action::Stop => TaskState::PoweringOff,
            Action::Start => TaskState::PoweringOn,
            Action::RebootSoft => TaskState::Rebooting,
            Action::RebootHard => TaskState::RebootingHard,
            Action::Delete | Action::ForceDelete => TaskState::Deleting,
            Action::Pause => TaskState::Pausing,
            Action::Unpause => TaskState::Unpausing,
            Action::Suspend => TaskState::Suspending,
            Action::Resume => TaskState::Resuming,
            // Nova's API sets image_snapshot_pending; the compute host then image_snapshot.
            Action::CreateImage => TaskState::ImageSnapshotPending,
            Action::CreateBackup => TaskState::ImageBackup,
            Action::Rebuild | Action::Evacuate => TaskState::Rebuilding,
            Action::Resize | Action::Migrate => TaskState::ResizePrep,
            Action::RevertResize => TaskState::ResizeReverting,
            Action::LiveMigrate => TaskState::Migrating,
            Action::Shelve => TaskState::Shelving,
            Action::ShelveOffload => TaskState::ShelvingOffloading,
            Action::Unshelve => TaskState::Unshelving,
            Action::Rescue => TaskState::Rescuing,
            Action::Unrescue => TaskState::Unrescuing,
            Action::Restore => TaskState::Restoring,
            Action::ConfirmResize | Action::AttachInterface | Action::DetachInterface => return None,
        })
    }
}

/// The one table: whether `action` may start from (`vm`, `task`), as nova.compute.api's
/// `check_instance_state` decorators allow it (their default task_state is "no task").
pub fn allowed(action: Action, vm: VmState, task: Option<TaskState>) -> bool {
    use TaskState as T;
    use VmState as V;
    let soft_rebooting = matches!(task, Some(T::Rebooting | T::RebootPending | T::RebootStarted));
    let idle = task.is_none();
    match action {
        Action::Stop => matches!(vm, V::Active | V::Error) && idle,
        Action::Start => vm == V::Stopped && idle,
        Action::RebootSoft => vm == V::Active && idle,
        // A hard reboot may interrupt a soft one that is stuck, and rescues ERROR, stopped,
        // paused and suspended ones (Nova's ALLOW_HARD_REBOOT).
        Action::RebootHard => {
            matches!(vm, V::Active | V::Stopped | V::Error | V::Paused | V::Suspended) && (idle || soft_rebooting)
        }
        Action::Pause | Action::Suspend => vm == V::Active && idle,
        Action::Unpause => vm == V::Paused && idle,
        Action::Resume => vm == V::Suspended && idle,
        // Delete is always accepted, except when one is already running.
        Action::Delete => vm != V::Deleted && task != Some(T::Deleting),
        Action::CreateImage | Action::CreateBackup | Action::Shelve => {
            matches!(vm, V::Active | V::Stopped | V::Paused | V::Suspended) && idle
        }
        Action::Rebuild | Action::Rescue | Action::Evacuate => matches!(vm, V::Active | V::Stopped | V::Error) && idle,
        Action::Resize | Action::Migrate => matches!(vm, V::Active | V::Stopped) && idle,
        Action::ConfirmResize | Action::RevertResize => vm == V::Resized && idle,
        Action::LiveMigrate => matches!(vm, V::Active | V::Paused) && idle,
        Action::ShelveOffload => vm == V::Shelved && idle,
        Action::Unshelve => matches!(vm, V::Shelved | V::ShelvedOffloaded) && idle,
        Action::Unrescue => vm == V::Rescued && idle,
        Action::Restore => vm == V::SoftDeleted && idle,
        // Nova's force_delete checks no state at all; one delete at a time, as for Delete.
        Action::ForceDelete => vm != V::Deleted && task != Some(T::Deleting),
        Action::AttachInterface | Action::DetachInterface => matches!(vm, V::Active | V::Paused | V::Stopped) && idle,
    }
}

/// The 409 for a refused action, worded as Nova's API words `InstanceInvalidState`: it blames
/// the task_state when the vm_state alone would have allowed the action.
pub fn refuse(action: Action, instance_id: &str, vm: VmState, task: Option<TaskState>) -> ApiError {
    let (attr, state) = match task {
        Some(t) if allowed(action, vm, None) => ("task_state", t.as_str()),
        _ => ("vm_state", vm.as_str()),
    };
    ApiError::conflict(format!("Cannot '{}' instance {instance_id} while it is in {attr} {state}", action.method()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks every (action, vm_state, task_state) triple against the expected table.
    #[test]
    fn every_pair_is_decided() {
        use TaskState as T;
        use VmState as V;
        let mut tasks: Vec<Option<TaskState>> = vec![None];
        tasks.extend(TaskState::ALL.into_iter().map(Some));
        let mut allowed_count = 0;
        for action in Action::ALL {
            for vm in VmState::ALL {
                for task in &tasks {
                    let want = match action {
                        Action::Stop => (vm == V::Active || vm == V::Error) && task.is_none(),
                        Action::Start => vm == V::Stopped && task.is_none(),
                        Action::RebootSoft => vm == V::Active && task.is_none(),
                        Action::RebootHard => {
                            [V::Active, V::Stopped, V::Error, V::Paused, V::Suspended].contains(&vm)
                                && [None, Some(T::Rebooting), Some(T::RebootPending), Some(T::RebootStarted)]
                                    .contains(task)
                        }
                        Action::Delete => vm != V::Deleted && *task != Some(T::Deleting),
                        Action::Pause | Action::Suspend => vm == V::Active && task.is_none(),
                        Action::Unpause => vm == V::Paused && task.is_none(),
                        Action::Resume => vm == V::Suspended && task.is_none(),
                        Action::ForceDelete => vm != V::Deleted && *task != Some(T::Deleting),
                        other => {
                            let from: &[VmState] = match other {
                                Action::CreateImage | Action::CreateBackup | Action::Shelve => {
                                    &[V::Active, V::Stopped, V::Paused, V::Suspended]
                                }
                                Action::Rebuild | Action::Rescue | Action::Evacuate => {
                                    &[V::Active, V::Stopped, V::Error]
                                }
                                Action::Resize | Action::Migrate => &[V::Active, V::Stopped],
                                Action::ConfirmResize | Action::RevertResize => &[V::Resized],
                                Action::LiveMigrate => &[V::Active, V::Paused],
                                Action::ShelveOffload => &[V::Shelved],
                                Action::Unshelve => &[V::Shelved, V::ShelvedOffloaded],
                                Action::Unrescue => &[V::Rescued],
                                Action::Restore => &[V::SoftDeleted],
                                Action::AttachInterface | Action::DetachInterface => {
                                    &[V::Active, V::Paused, V::Stopped]
                                }
                                _ => unreachable!("decided above"),
                            };
                            from.contains(&vm) && task.is_none()
                        }
                    };
                    assert_eq!(allowed(action, vm, *task), want, "{action:?} from {vm:?}/{task:?}");
                    if want {
                        allowed_count += 1;
                    } else {
                        let msg = refuse(action, "x", vm, *task).message;
                        assert!(
                            msg.starts_with(&format!("Cannot '{}' instance x while it is in ", action.method())),
                            "{msg}"
                        );
                    }
                }
            }
        }
        // stop 2, start 1, soft reboot 1, hard reboot 5×4, delete and force delete 11×42 each,
        // pause, unpause, suspend, resume 1 each; snapshot, backup, shelve 4 each; rebuild,
        // rescue, evacuate 3 each; resize, migrate 2 each; confirm, revert 1 each; live
        // migrate 2; shelve offload 1, unshelve 2, unrescue 1, restore 1; interfaces 3 each.
        assert_eq!(allowed_count, 992, "table size changed: update this test knowingly");
    }

    #[test]
    fn status_mapping() {
        assert_eq!(status(VmState::Building, Some(TaskState::Spawning)), "BUILD");
        assert_eq!(status(VmState::Active, None), "ACTIVE");
        assert_eq!(status(VmState::Active, Some(TaskState::PoweringOff)), "ACTIVE");
        assert_eq!(status(VmState::Active, Some(TaskState::RebootStarted)), "REBOOT");
        assert_eq!(status(VmState::Active, Some(TaskState::RebootingHard)), "HARD_REBOOT");
        assert_eq!(status(VmState::Stopped, Some(TaskState::PoweringOn)), "SHUTOFF");
        assert_eq!(status(VmState::Error, None), "ERROR");
        assert_eq!(status(VmState::Paused, None), "PAUSED");
        assert_eq!(status(VmState::Active, Some(TaskState::Pausing)), "ACTIVE");
        assert_eq!(status(VmState::Suspended, Some(TaskState::Resuming)), "SUSPENDED");
        // Nova's _STATE_MAP has no reboot entries for these two.
        assert_eq!(status(VmState::Paused, Some(TaskState::RebootingHard)), "PAUSED");
        assert_eq!(status(VmState::Resized, None), "VERIFY_RESIZE");
        assert_eq!(status(VmState::Resized, Some(TaskState::ResizeReverting)), "REVERT_RESIZE");
        assert_eq!(status(VmState::Resized, Some(TaskState::ResizeConfirming)), "VERIFY_RESIZE");
        assert_eq!(status(VmState::Stopped, Some(TaskState::ResizeMigrating)), "RESIZE");
        assert_eq!(status(VmState::Error, Some(TaskState::RebuildSpawning)), "REBUILD");
        assert_eq!(status(VmState::Error, Some(TaskState::ResizePrep)), "ERROR");
        assert_eq!(status(VmState::Paused, Some(TaskState::Migrating)), "MIGRATING");
        assert_eq!(status(VmState::Active, Some(TaskState::UpdatingPassword)), "PASSWORD");
        assert_eq!(status(VmState::Stopped, Some(TaskState::UpdatingPassword)), "SHUTOFF");
        assert_eq!(status(VmState::SoftDeleted, Some(TaskState::Restoring)), "SOFT_DELETED");
        assert_eq!(status(VmState::ShelvedOffloaded, Some(TaskState::Unshelving)), "SHELVED_OFFLOADED");
        assert_eq!(status(VmState::Rescued, None), "RESCUE");
        for t in TaskState::ALL {
            assert_eq!(TaskState::parse(t.as_str()), Some(t));
        }
        for v in VmState::ALL {
            assert_eq!(VmState::parse(v.as_str()), Some(v));
        }
    }
}
