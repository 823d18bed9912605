//! A [`Hypervisor`] that times every call of the one it wraps
//! (`meridian_agent_libvirt_call_duration_seconds`, by operation).

use std::time::Instant;

use super::{DomainState, DomainSummary, HostInfo, HvError, Hypervisor, JobProgress, LiveMigration};

pub struct Timed<H>(pub H);

fn timed<T>(op: &'static str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    metrics::histogram!("meridian_agent_libvirt_call_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    out
}

impl<H: Hypervisor> Hypervisor for Timed<H> {
    fn host_info(&self) -> Result<HostInfo, HvError> {
        timed("host_info", || self.0.host_info())
    }
    fn domains(&self) -> Result<Vec<DomainSummary>, HvError> {
        timed("domains", || self.0.domains())
    }
    fn state(&self, name: &str) -> Result<Option<DomainState>, HvError> {
        timed("state", || self.0.state(name))
    }
    fn domain_xml(&self, name: &str) -> Result<String, HvError> {
        timed("domain_xml", || self.0.domain_xml(name))
    }
    fn define(&self, xml: &str) -> Result<(), HvError> {
        timed("define", || self.0.define(xml))
    }
    fn start(&self, name: &str) -> Result<(), HvError> {
        timed("start", || self.0.start(name))
    }
    fn shutdown(&self, name: &str) -> Result<(), HvError> {
        timed("shutdown", || self.0.shutdown(name))
    }
    fn destroy(&self, name: &str) -> Result<(), HvError> {
        timed("destroy", || self.0.destroy(name))
    }
    fn reboot(&self, name: &str) -> Result<(), HvError> {
        timed("reboot", || self.0.reboot(name))
    }
    fn reset(&self, name: &str) -> Result<(), HvError> {
        timed("reset", || self.0.reset(name))
    }
    fn undefine(&self, name: &str) -> Result<(), HvError> {
        timed("undefine", || self.0.undefine(name))
    }
    fn ensure_network(&self, name: &str, xml: &str) -> Result<(), HvError> {
        timed("ensure_network", || self.0.ensure_network(name, xml))
    }
    fn set_dhcp_host(&self, network: &str, mac: &str, ip: &str) -> Result<(), HvError> {
        timed("set_dhcp_host", || self.0.set_dhcp_host(network, mac, ip))
    }
    fn remove_dhcp_host(&self, network: &str, mac: &str) -> Result<(), HvError> {
        timed("remove_dhcp_host", || self.0.remove_dhcp_host(network, mac))
    }
    fn remove_network(&self, name: &str) -> Result<(), HvError> {
        timed("remove_network", || self.0.remove_network(name))
    }
    fn open_serial(&self, name: &str) -> Result<std::sync::Arc<dyn super::SerialConsole>, HvError> {
        timed("open_serial", || self.0.open_serial(name))
    }
    fn attach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HvError> {
        timed("attach_device", || self.0.attach_device(name, xml, live, config))
    }
    fn detach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<bool, HvError> {
        timed("detach_device", || self.0.detach_device(name, xml, live, config))
    }
    fn block_resize(&self, name: &str, disk: &str, bytes: u64) -> Result<bool, HvError> {
        timed("block_resize", || self.0.block_resize(name, disk, bytes))
    }
    fn domain_config_xml(&self, name: &str) -> Result<String, HvError> {
        timed("domain_config_xml", || self.0.domain_config_xml(name))
    }
    fn pause(&self, name: &str) -> Result<(), HvError> {
        timed("pause", || self.0.pause(name))
    }
    fn unpause(&self, name: &str) -> Result<(), HvError> {
        timed("unpause", || self.0.unpause(name))
    }
    fn managed_save(&self, name: &str) -> Result<(), HvError> {
        timed("managed_save", || self.0.managed_save(name))
    }
    fn discard_save(&self, name: &str) -> Result<(), HvError> {
        timed("discard_save", || self.0.discard_save(name))
    }
    fn domain_stats(&self, name: &str) -> Result<super::DomainStats, HvError> {
        timed("domain_stats", || self.0.domain_stats(name))
    }
    fn migratable_xml(&self, name: &str) -> Result<String, HvError> {
        timed("migratable_xml", || self.0.migratable_xml(name))
    }
    fn migrate_live(&self, name: &str, migration: &LiveMigration) -> Result<(), HvError> {
        timed("migrate_live", || self.0.migrate_live(name, migration))
    }
    fn job_progress(&self, name: &str) -> Result<Option<JobProgress>, HvError> {
        timed("job_progress", || self.0.job_progress(name))
    }
    fn abort_job(&self, name: &str) -> Result<(), HvError> {
        timed("abort_job", || self.0.abort_job(name))
    }
}
