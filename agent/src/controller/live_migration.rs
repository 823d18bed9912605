//! Live migration on the host (issue 17): libvirt's peer-to-peer live block migration.
//!
//! - Destination ([`Action::LiveMigrateIn`], Nova's `pre_live_migration`): a build without
//!   the domain (see `Controller::prepare`): the image cached, an empty overlay over it, the
//!   ephemeral and swap disks, the config drive made again from the spec, the ports plugged
//!   and their filters in force. Answers where it put each disk ([`LiveMigrationTarget`]).
//! - Source ([`Action::LiveMigrateOut`]): the running definition with the destination's paths
//!   and name, then `virDomainMigrateToURI3` (peer to peer, `NON_SHARED_INC`: each disk's own
//!   layer is copied while the guest runs, its backing image is the destination's cached
//!   copy). Beside it, once a second, the job's progress goes to the server, whose answer may
//!   abort the migration or force it to complete (the guest is paused so the copy converges;
//!   libvirt starts it on the destination). libvirt guarantees the guest runs on exactly one
//!   side: on success the domain is gone from here (its files wait for `MigrateCleanup`), on
//!   failure it runs on here as before.
//!
//! The daemons must reach each other: the destination's `--migration-uri` (libvirt, e.g.
//! `qemu+tcp://HOST/system`) and `--migration-address` (QEMU's data, `tcp://ADDR`). The data is
//! not encrypted; on an untrusted network use `qemu+tls://` and libvirt's native TLS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_common::agent::{BuildSpec, LiveMigrationControl, LiveMigrationProgress, LiveMigrationTarget};
use tracing::{info, warn};
use uuid::Uuid;

use super::{ActionError, Controller, RootDisk, chain};
use crate::hypervisor::{JobProgress, LiveMigration};
use crate::lifecycle::InstanceState;
use crate::xml;

/// How often the source reports progress and asks whether to abort or force completion.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Where this host receives live guests (the agent's `--migration-uri` / `--migration-address`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationEndpoint {
    pub libvirt_uri: String,
    pub migrate_uri: Option<String>,
}

impl Controller {
    /// The destination's side: everything but the domain, which the guest brings.
    pub(super) async fn live_migrate_in(&self, id: Uuid, spec: &BuildSpec) -> Result<serde_json::Value, ActionError> {
        if self.cfg.virt_type == xml::VirtType::Test {
            return Err(ActionError::Invalid(
                "this host runs libvirt's test driver, which cannot receive a live guest".into(),
            ));
        }
        let Some(endpoint) = self.cfg.migration.clone() else {
            return Err(ActionError::Invalid("this host has no --migration-uri to receive live guests at".into()));
        };
        // The server's task state stays `migrating`: a build's progress names are not reported.
        let quiet = |_: &str| {};
        let prepared = self.prepare(id, spec, &quiet, RootDisk::New, Vec::new()).await;
        let domain_xml = match prepared {
            Ok(x) => x,
            Err(e) => {
                if let Err(c) = self.teardown(id).await {
                    warn!(instance = %id, error = %chain(&c), "cleanup after a failed live migration prepare");
                }
                return Err(e);
            }
        };
        let disks: BTreeMap<String, String> = xml::disks(&domain_xml).into_iter().collect();
        let target = LiveMigrationTarget {
            libvirt_uri: endpoint.libvirt_uri,
            migrate_uri: endpoint.migrate_uri,
            domain_name: self.cfg.naming.domain(&id),
            disks,
            console_log: Some(self.console_log_path(&id).to_string_lossy().into_owned()),
        };
        info!(instance = %id, "ready to receive the live guest");
        serde_json::to_value(&target).map_err(|e| ActionError::Invalid(e.to_string()))
    }

    /// The source's side: the guest moved to `target`, reporting progress as it goes.
    pub(super) async fn live_migrate_out(
        &self,
        id: Uuid,
        name: &str,
        state: InstanceState,
        migration: &str,
        target: &LiveMigrationTarget,
        timeout: Duration,
    ) -> Result<serde_json::Value, ActionError> {
        if !matches!(state, InstanceState::Running | InstanceState::Paused) {
            return Err(ActionError::Invalid(format!("a live migration needs a running guest; this one is {state:?}")));
        }
        let n = name.to_string();
        let source_xml = self.hv(move |hv| hv.migratable_xml(&n)).await?;
        let dest_xml =
            xml::for_destination(&source_xml, &target.domain_name, &target.disks, target.console_log.as_deref())
                .map_err(ActionError::Invalid)?;
        let request = LiveMigration {
            dest_uri: target.libvirt_uri.clone(),
            migrate_uri: target.migrate_uri.clone(),
            dest_name: target.domain_name.clone(),
            dest_xml,
            disks: xml::writable_disks(&source_xml),
            paused: state == InstanceState::Paused,
        };
        let hv = std::sync::Arc::clone(self.hypervisor());
        let n = name.to_string();
        let mut moving = tokio::task::spawn_blocking(move || hv.migrate_live(&n, &request));
        let started = Instant::now();
        let mut last = JobProgress::default();
        let mut control = LiveMigrationControl::default();
        let (mut aborted, mut forced, mut overdue) = (false, false, false);
        let outcome = loop {
            tokio::select! {
                done = &mut moving => break done.map_err(|_| ActionError::Panicked)?,
                () = tokio::time::sleep(REPORT_EVERY) => {}
            }
            let n = name.to_string();
            if let Ok(Some(p)) = self.hv(move |hv| hv.job_progress(&n)).await {
                last = p;
            }
            match self.images.server().live_migration_progress(migration, &to_wire(last)).await {
                Ok(c) => control = c,
                // The server's own deadline bounds a migration it cannot hear about.
                Err(e) => warn!(%migration, error = %e, "cannot report live migration progress"),
            }
            if !overdue && started.elapsed() >= timeout {
                warn!(instance = %id, %migration, secs = timeout.as_secs(), "live migration overdue; aborting it");
                overdue = true;
            }
            if (control.abort || overdue) && !aborted {
                aborted = true;
                let n = name.to_string();
                if let Err(e) = self.hv(move |hv| hv.abort_job(&n)).await {
                    warn!(instance = %id, error = %chain(&e), "cannot abort the live migration");
                }
            } else if control.force_complete && !forced && !aborted {
                // Nova's force_complete without post-copy: a paused guest dirties no memory, so
                // the copy converges; libvirt starts it again on the destination.
                forced = true;
                let n = name.to_string();
                if let Err(e) = self.hv(move |hv| hv.pause(&n)).await {
                    warn!(instance = %id, error = %chain(&e), "cannot pause the guest to force completion");
                }
            }
        };
        match outcome {
            Ok(()) => {
                info!(instance = %id, %migration, secs = started.elapsed().as_secs_f64(), "guest live-migrated");
                let moved = serde_json::json!({
                    "memory_bytes": last.memory_processed,
                    "disk_bytes": last.disk_processed,
                });
                Ok(moved)
            }
            Err(e) => {
                if forced {
                    // The guest stays here; it was running before we paused it.
                    let n = name.to_string();
                    if let Err(u) = self.hv(move |hv| hv.unpause(&n)).await {
                        warn!(instance = %id, error = %chain(&u), "cannot resume the guest after a failed migration");
                    }
                }
                if overdue {
                    return Err(ActionError::Invalid(format!(
                        "the live migration did not complete within {} s and was aborted: {}",
                        timeout.as_secs(),
                        chain(&e)
                    )));
                }
                if aborted {
                    return Err(ActionError::Invalid(format!("the live migration was cancelled: {}", chain(&e))));
                }
                Err(e.into())
            }
        }
    }
}

fn to_wire(p: JobProgress) -> LiveMigrationProgress {
    LiveMigrationProgress {
        memory_total_bytes: p.memory_total,
        memory_processed_bytes: p.memory_processed,
        memory_remaining_bytes: p.memory_remaining,
        disk_total_bytes: p.disk_total,
        disk_processed_bytes: p.disk_processed,
        disk_remaining_bytes: p.disk_remaining,
    }
}
