-- Retention (issue 13): what the purge looks up, so its selects are index range scans rather
-- than full scans of tables that grow with every boot.

-- Deleted instances, oldest deletion first.
CREATE INDEX instances_deleted ON instances (deleted, terminated_at);

-- Finished work items (done, failed, cancelled), oldest first.
CREATE INDEX work_state_updated ON work (state, updated_at);
