//! The libvirt `Hypervisor` on `test:///default`, driven with XML from `xml::domain_xml`.

use std::net::Ipv4Addr;

use meridian_agent::hypervisor::{DomainState, Hypervisor};
use meridian_agent::xml::{self, DiskBus, DomainSpec, NetworkSpec, NicXml, VirtType};
use uuid::Uuid;

use crate::fixtures::{Cleanup, DomainGuard, libvirt};

fn spec(id: Uuid, nics: Vec<NicXml>) -> DomainSpec {
    DomainSpec {
        instance_id: id,
        naming: Default::default(),
        display_name: "hv test".into(),
        project_id: "p".into(),
        virt_type: VirtType::Test,
        arch: "x86_64".into(),
        machine: None,
        memory_mb: 128,
        vcpus: 1,
        disk: format!("/tmp/meridian-test-{id}.qcow2").into(),
        disk_bus: DiskBus::Virtio,
        console_log: format!("/tmp/meridian-test-{id}.log").into(),
        nics,
        kernel: None,
        config_drive: None,
        root_volume: None,
        ephemerals: Vec::new(),
        swap: None,
        volumes: Vec::new(),
    }
}

#[test]
fn domain_lifecycle_on_the_test_driver() {
    let hv = libvirt();
    let id = Uuid::new_v4();
    let name = xml::Naming::default().domain(&id);
    let _guard = DomainGuard { hv: hv.clone(), name: name.clone() };
    assert_eq!(hv.state(&name).expect("state"), None);

    hv.define(&xml::domain_xml(&spec(id, vec![]))).expect("define");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Shutoff));
    hv.start(&name).expect("start");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Running));
    hv.shutdown(&name).expect("shutdown");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Shutoff));
    hv.start(&name).expect("start again");
    hv.reboot(&name).expect("reboot");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Running));
    hv.reset(&name).expect("reset");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Running));

    let listed = hv.domains().expect("domains");
    assert!(listed.iter().any(|d| d.name == name && d.state == DomainState::Running));
    let live = hv.domain_xml(&name).expect("xml");
    assert!(live.contains(&format!("<uuid>{id}</uuid>")));

    hv.destroy(&name).expect("destroy");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Shutoff));
    // Destroying what is off is fine; starting what is missing is not.
    hv.destroy(&name).expect("destroy again");
    hv.undefine(&name).expect("undefine");
    assert_eq!(hv.state(&name).expect("state"), None);
    hv.undefine(&name).expect("undefine again");
    assert!(hv.start(&name).is_err());
}

#[test]
fn host_info_from_the_test_driver() {
    let hv = libvirt();
    let info = hv.host_info().expect("host info");
    assert_eq!(info.hypervisor_type, "test");
    assert!(info.vcpus > 0 && info.memory_mb > 0);
    assert!(info.supports_networks);
    assert!(!info.arch.is_empty());
}

#[test]
fn networks_and_dhcp_hosts() {
    let hv = libvirt();
    let net_id = Uuid::new_v4().to_string();
    let net = xml::network_name(&net_id);
    let _cleanup = Cleanup { hv: hv.clone(), instances: vec![], networks: vec![net_id.clone()] };
    let spec = NetworkSpec {
        name: net.clone(),
        bridge: xml::bridge_name(&net_id),
        mtu: Some(1450),
        ip: Some((Ipv4Addr::new(10, 9, 0, 1), 24)),
        hosts: vec![("fa:16:3e:00:00:01".into(), "10.9.0.5".into())],
    };
    let net_xml = xml::network_xml(&spec);
    hv.ensure_network(&net, &net_xml).expect("create");
    hv.ensure_network(&net, &net_xml).expect("exists already");
    hv.set_dhcp_host(&net, "FA:16:3E:00:00:02", "10.9.0.6").expect("add");
    hv.set_dhcp_host(&net, "fa:16:3e:00:00:02", "10.9.0.7").expect("modify");
    hv.set_dhcp_host(&net, "fa:16:3e:00:00:01", "10.9.0.5").expect("same again");
    // A stale entry holding an IP is replaced by the new owner of the IP.
    hv.set_dhcp_host(&net, "fa:16:3e:00:00:03", "10.9.0.5").expect("take over the IP");
    let conn = virt::connect::Connect::open(Some(crate::fixtures::URI)).expect("connect");
    let live = conn.lookup_network_by_name(&net).expect("network").xml_desc(0).expect("network xml");
    assert!(live.contains("<forward mode='nat'/>"), "{live}");
    assert!(!live.contains("mac='fa:16:3e:00:00:01'"), "{live}");
    assert!(live.contains("<host mac='fa:16:3e:00:00:03' ip='10.9.0.5'/>"), "{live}");
    assert!(live.contains("ip='10.9.0.7'") && !live.contains("ip='10.9.0.6'"), "{live}");

    // A domain plugged into it defines and starts.
    let id = Uuid::new_v4();
    let name = xml::Naming::default().domain(&id);
    let _guard = DomainGuard { hv: hv.clone(), name: name.clone() };
    let nic = NicXml {
        mac: "fa:16:3e:00:00:02".into(),
        network: Some(net.clone()),
        model: "virtio",
        mtu: Some(1450),
        tap: None,
    };
    hv.define(&xml::domain_xml(&self::spec(id, vec![nic]))).expect("define");
    hv.start(&name).expect("start");

    hv.remove_dhcp_host(&net, "fa:16:3e:00:00:02").expect("remove");
    hv.remove_dhcp_host(&net, "fa:16:3e:00:00:02").expect("remove again");
    hv.remove_network(&net).expect("remove network");
    hv.remove_network(&net).expect("remove network again");
    hv.remove_dhcp_host(&net, "fa:16:3e:00:00:01").expect("no network, nothing to remove");
    assert!(hv.set_dhcp_host(&net, "fa:16:3e:00:00:01", "10.9.0.5").is_err());
}

#[test]
fn the_test_driver_has_no_serial_console_and_says_so() {
    let hv = libvirt();
    let id = Uuid::new_v4();
    let name = xml::Naming::default().domain(&id);
    let _guard = DomainGuard { hv: hv.clone(), name: name.clone() };
    hv.define(&xml::domain_xml(&spec(id, vec![]))).expect("define");
    hv.start(&name).expect("start");
    // libvirt's test driver implements no console streams: a clear error, not a fake console.
    let err = match hv.open_serial(&name) {
        Ok(_) => panic!("the test driver opened a serial console"),
        Err(e) => meridian_agent::controller::chain(&e),
    };
    assert!(err.starts_with(&format!("cannot open the serial console of domain {name}")), "{err}");
    assert!(err.contains("not supported"), "{err}");
    hv.destroy(&name).expect("destroy");
    hv.undefine(&name).expect("undefine");
    assert!(matches!(hv.open_serial(&name), Err(meridian_agent::hypervisor::HvError::NoDomain(_))));
}
