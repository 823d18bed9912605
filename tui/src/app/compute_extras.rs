//! The app's side of server groups, aggregates, instance interfaces and diagnostics: the forms
//! the keys open and where the worker's answers go. The views are `views::server_groups`,
//! `views::aggregates` and `views::interfaces`; `app.rs` dispatches here from its usual places.

use super::{App, Pending};
use crate::overlays::{CreateForm, Overlay};
use crate::views::View;
use crate::views::detail::Tab;
use crate::worker::{Kind, Request};

impl App {
    /// `c` in the server groups view: the create form, with the per-host rule where the cloud's
    /// compute API has it (2.64).
    pub(super) fn ask_server_group(&mut self) {
        let version = self.session.as_ref().and_then(|s| s.compute_version.clone());
        let rules = crate::views::server_groups::at_least(version.as_deref(), (2, 64));
        self.overlay = Some(Overlay::Create(CreateForm::server_group(rules)));
    }

    /// `a` in the aggregates view: hosts to add or remove (picked among the hypervisors) and
    /// the zone.
    pub(super) fn ask_aggregate_hosts(&mut self) {
        let Some(a) = self.tables.aggregates.selected() else {
            self.info = Some("no aggregate selected".into());
            return;
        };
        let agg = (a.key.clone(), a.name.clone(), a.hosts.clone());
        let zone = a.availability_zone.clone().unwrap_or_default();
        let form = CreateForm::aggregate_hosts(agg, &zone, self.hypervisor_hosts());
        self.overlay = Some(Overlay::Create(form));
        self.send(Request::List(Kind::Hypervisors));
    }

    /// `m` in `:aggregates`: the selected aggregate's metadata editor.
    pub(super) fn ask_aggregate_metadata(&mut self) {
        let Some(a) = self.tables.aggregates.selected() else {
            self.info = Some("no aggregate selected".into());
            return;
        };
        let form = CreateForm::aggregate_metadata((a.key.clone(), a.name.clone()), a.metadata_pairs());
        self.overlay = Some(Overlay::Create(form));
    }

    /// Hypervisor host names (the `host` Nova's aggregate actions take is the service host,
    /// which is the hypervisor's `service.host`, else its hostname).
    fn hypervisor_hosts(&self) -> Vec<String> {
        self.tables
            .hypervisors
            .items
            .iter()
            .map(|h| h.raw["service"]["host"].as_str().unwrap_or(&h.hypervisor_hostname).to_string())
            .collect()
    }

    /// `i` on an instance: attach a port, new on a network or an existing free one.
    pub(super) fn ask_add_port(&mut self) {
        let Some((id, name)) = self.target_server() else {
            self.info = Some("add a port: select an instance (Instances view)".into());
            return;
        };
        let nets: Vec<(String, String)> =
            self.tables.networks.items.iter().map(|n| (n.name.clone(), n.id.clone())).collect();
        let mut form = CreateForm::add_port((id, name, Vec::new()), nets);
        form.set_free_ports(self.free_ports());
        self.overlay = Some(Overlay::Create(form));
        self.send(Request::List(Kind::Networks));
        self.send(Request::List(Kind::Ports));
    }

    /// `I` on an instance: detach one of its ports.
    pub(super) fn ask_remove_port(&mut self) {
        let Some((id, name)) = self.target_server() else {
            self.info = Some("remove a port: select an instance (Instances view)".into());
            return;
        };
        let ports = self.instance_ports(&id);
        self.overlay = Some(Overlay::Create(CreateForm::remove_port((id, name), ports)));
        self.send(Request::List(Kind::Ports));
    }

    /// Ports nothing uses (name or ID, ID).
    fn free_ports(&self) -> Vec<(String, String)> {
        use crate::table::Resource;
        self.tables
            .ports
            .items
            .iter()
            .filter(|p| p.device_id.as_deref().unwrap_or_default().is_empty())
            .map(|p| (p.name().to_string(), p.id.clone()))
            .collect()
    }

    /// The instance's ports as (`IP name`, ID): from its open detail's interfaces, else the ports list.
    fn instance_ports(&self, server_id: &str) -> Vec<(String, String)> {
        if let Some(d) = &self.detail
            && d.id == server_id
            && let Some(list) = &d.interfaces
        {
            return list.iter().map(|i| (format!("{} {}", i.ips(), i.port_id), i.port_id.clone())).collect();
        }
        self.tables
            .ports
            .items
            .iter()
            .filter(|p| p.device_id.as_deref() == Some(server_id))
            .map(|p| {
                let ips: Vec<&str> = p.fixed_ips.iter().map(|f| f.ip_address.as_str()).collect();
                let name = p.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| p.id.clone());
                (format!("{} {name}", ips.join(",")), p.id.clone())
            })
            .collect()
    }

    /// Fresher choices for an open port or aggregate form (after a list came back).
    pub(super) fn push_extras_data(&mut self) {
        let free = self.free_ports();
        let hosts = self.hypervisor_hosts();
        let target = match &self.overlay {
            Some(Overlay::Create(f)) if f.what == crate::overlays::create::What::RemovePort => {
                f.target_id().map(str::to_string)
            }
            _ => None,
        };
        let ports = target.map(|t| self.instance_ports(&t)).unwrap_or_default();
        if let Some(Overlay::Create(form)) = &mut self.overlay {
            form.set_free_ports(free);
            form.set_instance_ports(ports);
            form.set_hosts(hosts);
        }
        let groups = self.tables.server_groups.items.clone();
        if let Some(Overlay::Wizard(w)) = &mut self.overlay {
            w.server_groups = groups;
        }
    }

    /// `m` on an instance: its Interfaces tab, with the diagnostics read once.
    pub(super) fn diagnostics(&mut self) {
        let Some((id, _)) = self.target_server() else {
            self.info = Some("diagnostics: select an instance (Instances view)".into());
            return;
        };
        if self.detail.as_ref().is_none_or(|d| d.id != id) {
            self.open_detail(View::Servers, id.clone(), Tab::Interfaces);
        } else if let Some(d) = &mut self.detail
            && d.tab != Tab::Interfaces
        {
            d.tab = Tab::Interfaces;
            self.send(Request::Interfaces(id.clone()));
        }
        self.set_network_names();
        self.send(Request::Diagnostics(id));
    }

    fn set_network_names(&mut self) {
        let names = self.tables.networks.items.iter().map(|n| (n.id.clone(), n.name.clone())).collect();
        if let Some(d) = &mut self.detail {
            d.network_names = names;
        }
    }

    pub(super) fn interfaces_loaded(&mut self, id: String, interfaces: Vec<crate::views::interfaces::Interface>) {
        self.pending.remove(&Pending::Interfaces);
        self.set_network_names();
        if let Some(d) = &mut self.detail
            && d.id == id
        {
            d.interfaces = Some(interfaces);
        }
    }

    pub(super) fn diagnostics_loaded(&mut self, id: String, result: Result<serde_json::Value, String>) {
        self.pending.remove(&Pending::Interfaces);
        if let Some(d) = &mut self.detail
            && d.id == id
        {
            d.diagnostics = Some(result);
        }
    }

    /// A port was attached or detached: the open Interfaces tab and the instance's addresses
    /// are read again.
    pub(super) fn ports_changed(&mut self) {
        if let Some(d) = &self.detail
            && d.tab == Tab::Interfaces
        {
            let id = d.id.clone();
            self.send(Request::Interfaces(id));
        }
        self.send(Request::List(Kind::Servers));
    }
}
