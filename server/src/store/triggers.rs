//! Triggers: the one part of the schema written per backend (their syntax differs), so it is
//! not a migration. Installed at every start, replacing what an older version installed, so
//! they always match this binary.
//!
//! `instance_transitions` is written by a trigger on `instances`: every INSERT, and every
//! UPDATE that sets `vm_state`, `task_state` or `power_state`, records the row's new state at
//! its `updated_at`. The state change and its record are one statement, so they are atomic
//! without a transaction and cost one round trip to the database instead of two.

use sqlx::{AnyConnection, Executor};

use super::Backend;

/// The next transition of `NEW`, numbered after the instance's last one (PostgreSQL serialises
/// writers of one instance on its row, SQLite has one writer).
const RECORD: &str = "INSERT INTO instance_transitions (seq, instance_id, vm_state, task_state, power_state, at) \
     SELECT COALESCE(MAX(seq), 0) + 1, NEW.id, NEW.vm_state, NEW.task_state, NEW.power_state, NEW.updated_at \
     FROM instance_transitions WHERE instance_id = NEW.id;";

const STATE_COLUMNS: &str = "vm_state, task_state, power_state";

pub(super) async fn install(conn: &mut AnyConnection, backend: Backend) -> sqlx::Result<()> {
    let sql = match backend {
        Backend::Sqlite => format!(
            "BEGIN;
             DROP TRIGGER IF EXISTS instance_created;
             DROP TRIGGER IF EXISTS instance_state_changed;
             CREATE TRIGGER instance_created AFTER INSERT ON instances BEGIN {RECORD} END;
             CREATE TRIGGER instance_state_changed AFTER UPDATE OF {STATE_COLUMNS} ON instances BEGIN {RECORD} END;
             COMMIT;"
        ),
        // The advisory lock keeps replicas starting together from replacing them at once.
        Backend::Postgres => format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(7265726964696101);
             CREATE OR REPLACE FUNCTION record_instance_transition() RETURNS trigger AS $fn$
             BEGIN {RECORD} RETURN NULL; END $fn$ LANGUAGE plpgsql;
             CREATE OR REPLACE TRIGGER instance_created AFTER INSERT ON instances
                 FOR EACH ROW EXECUTE FUNCTION record_instance_transition();
             CREATE OR REPLACE TRIGGER instance_state_changed AFTER UPDATE OF {STATE_COLUMNS} ON instances
                 FOR EACH ROW EXECUTE FUNCTION record_instance_transition();
             COMMIT;"
        ),
    };
    conn.execute(sql.as_str()).await?;
    Ok(())
}
