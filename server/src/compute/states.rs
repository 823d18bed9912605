//! The instance state machine: Nova's vm_state / task_state values, the API `status` derived
//! from them, and the one table that decides which action is allowed from which state.

use crate::error::ApiError;

/// Nova's `vm_state` values this cloud uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmState {
    Building,
    Active,
    Stopped,
    Error,
    Deleted,
    Paused,
    Suspended,
}

impl VmState {
    pub const ALL: [VmState; 7] = [
        VmState::Building,
        VmState::Active,
        VmState::Stopped,
        VmState::Error,
        VmState::Deleted,
        VmState::Paused,
        VmState::Suspended,
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
        }
    }

    pub fn parse(s: &str) -> Option<VmState> {
        VmState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Nova's `task_state` values this cloud uses (`None` is "no task").
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
}

impl TaskState {
    pub const ALL: [TaskState; 17] = [
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
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The API `status` (nova.api.openstack.common._STATE_MAP).
pub fn status(vm: VmState, task: Option<TaskState>) -> &'static str {
    use TaskState as T;
    match (vm, task) {
        (VmState::Building, _) => "BUILD",
        (VmState::Active, Some(T::Rebooting | T::RebootPending | T::RebootStarted)) => "REBOOT",
        (VmState::Active, Some(T::RebootingHard | T::RebootPendingHard | T::RebootStartedHard)) => "HARD_REBOOT",
        (VmState::Active, _) => "ACTIVE",
        (VmState::Stopped, Some(T::RebootingHard | T::RebootPendingHard | T::RebootStartedHard)) => "HARD_REBOOT",
        (VmState::Stopped, _) => "SHUTOFF",
        (VmState::Error, Some(T::RebootingHard | T::RebootPendingHard | T::RebootStartedHard)) => "HARD_REBOOT",
        (VmState::Error, _) => "ERROR",
        (VmState::Deleted, _) => "DELETED",
        (VmState::Paused, _) => "PAUSED",
        (VmState::Suspended, _) => "SUSPENDED",
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
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Stop,
        Action::Start,
        Action::RebootSoft,
        Action::RebootHard,
        Action::Delete,
        Action::Pause,
        Action::Unpause,
        Action::Suspend,
        Action::Resume,
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
        }
    }

    /// The task_state the action sets at once (what clients see first).
    pub fn first_task(self) -> TaskState {
        match self {
            Action::Stop => TaskState::PoweringOff,
            Action::Start => TaskState::PoweringOn,
            Action::RebootSoft => TaskState::Rebooting,
            Action::RebootHard => TaskState::RebootingHard,
            Action::Delete => TaskState::Deleting,
            Action::Pause => TaskState::Pausing,
            Action::Unpause => TaskState::Unpausing,
            Action::Suspend => TaskState::Suspending,
            Action::Resume => TaskState::Resuming,
        }
    }
}

/// The one table: whether `action` may start from (`vm`, `task`), as nova.compute.api's
/// `check_instance_state` decorators allow it.
pub fn allowed(action: Action, vm: VmState, task: Option<TaskState>) -> bool {
    use TaskState as T;
    use VmState as V;
    let soft_rebooting = matches!(task, Some(T::Rebooting | T::RebootPending | T::RebootStarted));
    match action {
        Action::Stop => matches!(vm, V::Active | V::Error) && task.is_none(),
        Action::Start => vm == V::Stopped && task.is_none(),
        Action::RebootSoft => vm == V::Active && task.is_none(),
        // A hard reboot may interrupt a soft one that is stuck, and rescues ERROR, stopped,
        // paused and suspended ones (Nova's ALLOW_HARD_REBOOT).
        Action::RebootHard => {
            matches!(vm, V::Active | V::Stopped | V::Error | V::Paused | V::Suspended)
                && (task.is_none() || soft_rebooting)
        }
        Action::Pause | Action::Suspend => vm == V::Active && task.is_none(),
        Action::Unpause => vm == V::Paused && task.is_none(),
        Action::Resume => vm == V::Suspended && task.is_none(),
        // Delete is always accepted, except when one is already running.
        Action::Delete => vm != V::Deleted && task != Some(T::Deleting),
    }
}

/// The 409 for a refused action, worded as Nova's API words `InstanceInvalidState`: it blames
/// the task_state when the vm_state alone would have allowed the action.
pub fn refuse(action: Action, instance_id: &str, vm: VmState, task: Option<TaskState>) -> ApiError {
    let (attr, state) = match task {
        Some(t) if allowed(action, vm, None) => ("task_state", t.as_str()),
        _ => ("vm_state", vm.as_str()),
    };
    ApiError::conflict(format!("Cannot '{}' instance {instance_id} while it is in {attr} {state}", action.name()))
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
                    };
                    assert_eq!(allowed(action, vm, *task), want, "{action:?} from {vm:?}/{task:?}");
                    if want {
                        allowed_count += 1;
                    } else {
                        let msg = refuse(action, "x", vm, *task).message;
                        assert!(
                            msg.starts_with(&format!("Cannot '{}' instance x while it is in ", action.name())),
                            "{msg}"
                        );
                    }
                }
            }
        }
        // stop 2, start 1, soft reboot 1, hard reboot 5×4, delete 6×17, pause, unpause,
        // suspend, resume 1 each.
        assert_eq!(allowed_count, 130, "table size changed: update this test knowingly");
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
        for t in TaskState::ALL {
            assert_eq!(TaskState::parse(t.as_str()), Some(t));
        }
        for v in VmState::ALL {
            assert_eq!(VmState::parse(v.as_str()), Some(v));
        }
    }
}
