//! Nova's instance-action event names in words. Other clouds' timelines (and the action history)
//! come from `os-instance-actions`, whose events are Nova's function names behind the
//! `wrap_instance_event` prefix (`compute__do_build_and_run_instance`, `compute_stop_instance`).

/// Known names, as Nova's compute manager, conductor and scheduler record them.
const NAMES: &[(&str, &str)] = &[
    ("compute__do_build_and_run_instance", "build and run"),
    ("compute_build_and_run_instance", "build and run"),
    ("conductor_schedule_and_build_instances", "schedule and build"),
    ("conductor_build_instances", "build"),
    ("schedule_instances", "schedule"),
    ("compute_start_instance", "power on"),
    ("compute_stop_instance", "power off"),
    ("compute_reboot_instance", "reboot"),
    ("compute_terminate_instance", "delete"),
    ("compute_soft_delete_instance", "soft delete"),
    ("compute_restore_instance", "restore"),
    ("compute_pause_instance", "pause"),
    ("compute_unpause_instance", "unpause"),
    ("compute_suspend_instance", "suspend"),
    ("compute_resume_instance", "resume"),
    ("compute_rescue_instance", "rescue"),
    ("compute_unrescue_instance", "unrescue"),
    ("compute_rebuild_instance", "rebuild"),
    ("conductor_rebuild_server", "rebuild (conductor)"),
    ("compute_prep_resize", "prepare resize"),
    ("compute_resize_instance", "resize"),
    ("compute_finish_resize", "finish resize"),
    ("compute_confirm_resize", "confirm resize"),
    ("compute_revert_resize", "revert resize"),
    ("compute_finish_revert_resize", "finish revert resize"),
    ("conductor_migrate_server", "migrate (conductor)"),
    ("compute_check_can_live_migrate_destination", "check live migration target"),
    ("compute_check_can_live_migrate_source", "check live migration source"),
    ("compute_pre_live_migration", "prepare live migration"),
    ("compute_live_migration", "live migrate"),
    ("compute_post_live_migration_at_destination", "finish live migration"),
    ("compute_rollback_live_migration", "roll back live migration"),
    ("conductor_live_migrate_instance", "live migrate (conductor)"),
    ("compute_shelve_instance", "shelve"),
    ("compute_shelve_offload_instance", "shelve offload"),
    ("compute_unshelve_instance", "unshelve"),
    ("conductor_unshelve_instance", "unshelve (conductor)"),
    ("compute_snapshot_instance", "snapshot"),
    ("compute_backup_instance", "backup"),
    ("compute_attach_volume", "attach volume"),
    ("compute_detach_volume", "detach volume"),
    ("compute_swap_volume", "swap volume"),
    ("compute_reserve_block_device_name", "reserve device name"),
    ("compute_attach_interface", "attach interface"),
    ("compute_detach_interface", "detach interface"),
    ("compute_set_admin_password", "set admin password"),
    ("compute_inject_network_info", "inject network info"),
    ("compute_reset_network", "reset network"),
    ("compute_trigger_crash_dump", "trigger crash dump"),
    ("compute_extend_volume", "extend volume"),
    ("compute_external_instance_event", "external event"),
];

/// An event name in words: the table's, else the name without its service prefix and with
/// spaces (`compute_frobnicate_instance` → `frobnicate instance`). Names that are not Nova's
/// event names (our own task states: `spawning`, `powering-off`) come back as they are.
pub fn event_words(name: &str) -> String {
    if let Some((_, words)) = NAMES.iter().find(|(n, _)| *n == name) {
        return (*words).to_string();
    }
    let Some(rest) = ["compute_", "conductor_", "scheduler_", "api_"].iter().find_map(|p| name.strip_prefix(p)) else {
        return name.to_string();
    };
    let rest = rest.trim_start_matches('_');
    let rest = rest.strip_prefix("do_").unwrap_or(rest);
    rest.replace('_', " ")
}

#[cfg(test)]
mod tests {
    use super::event_words;

    #[test]
    fn nova_event_names_read_as_words() {
        assert_eq!(event_words("compute__do_build_and_run_instance"), "build and run");
        assert_eq!(event_words("compute_stop_instance"), "power off");
        assert_eq!(event_words("conductor_schedule_and_build_instances"), "schedule and build");
        // Unknown names still lose their prefix and underscores.
        assert_eq!(event_words("compute__do_frobnicate_instance"), "frobnicate instance");
        // Our own task states are left alone.
        assert_eq!(event_words("spawning"), "spawning");
        assert_eq!(event_words("block_device_mapping"), "block_device_mapping");
    }
}
