//! Nova's server diagnostics from a domain's counters (`Action::Diagnostics`): the 2.48 body
//! Nova's libvirt driver builds (`get_instance_diagnostics`), and under `legacy` the flat dict
//! of its `get_diagnostics` that microversions before 2.48 show.

use serde_json::{Map, Value, json};

use crate::hypervisor::DomainStats;

/// The body for `st`; `virt_type` is the hypervisor (`kvm`, `qemu`, `test`).
pub fn diagnostics_body(st: &DomainStats, virt_type: &str, config_drive: bool, uptime: Option<u64>) -> Value {
    let vcpus = st.vcpus.max(1);
    // libvirt reports one CPU time for the domain here; each vCPU gets its share.
    let per_cpu = st.cpu_time_ns / u64::from(vcpus);
    let cpu_details: Vec<Value> =
        (0..st.vcpus).map(|i| json!({"id": i, "time": per_cpu, "utilisation": null})).collect();
    let nic_details: Vec<Value> = st
        .nics
        .iter()
        .map(|n| {
            json!({
                "mac_address": n.mac, "rx_octets": n.rx_bytes, "rx_errors": n.rx_errors, "rx_drop": n.rx_drop,
                "rx_packets": n.rx_packets, "rx_rate": null, "tx_octets": n.tx_bytes, "tx_errors": n.tx_errors,
                "tx_drop": n.tx_drop, "tx_packets": n.tx_packets, "tx_rate": null,
            })
        })
        .collect();
    let disk_details: Vec<Value> = st
        .disks
        .iter()
        .map(|d| {
            json!({
                "read_bytes": d.read_bytes, "read_requests": d.read_requests, "write_bytes": d.write_bytes,
                "write_requests": d.write_requests, "errors_count": d.errors,
            })
        })
        .collect();
    let mut legacy = Map::new();
    for i in 0..st.vcpus {
        legacy.insert(format!("cpu{i}_time"), json!(per_cpu));
    }
    for d in &st.disks {
        legacy.insert(format!("{}_read_req", d.dev), json!(d.read_requests));
        legacy.insert(format!("{}_read", d.dev), json!(d.read_bytes));
        legacy.insert(format!("{}_write_req", d.dev), json!(d.write_requests));
        legacy.insert(format!("{}_write", d.dev), json!(d.write_bytes));
        legacy.insert(format!("{}_errors", d.dev), json!(d.errors));
    }
    for n in st.nics.iter().filter(|n| !n.dev.is_empty()) {
        for (k, v) in [
            ("rx", n.rx_bytes),
            ("rx_packets", n.rx_packets),
            ("rx_errors", n.rx_errors),
            ("rx_drop", n.rx_drop),
            ("tx", n.tx_bytes),
            ("tx_packets", n.tx_packets),
            ("tx_errors", n.tx_errors),
            ("tx_drop", n.tx_drop),
        ] {
            legacy.insert(format!("{}_{k}", n.dev), json!(v));
        }
    }
    legacy.insert("memory".into(), json!(st.max_memory_kib));
    legacy.insert("memory-actual".into(), json!(st.memory_kib));
    json!({
        "state": if st.running { "running" } else { "shutdown" },
        "driver": "libvirt",
        "hypervisor": virt_type,
        "hypervisor_os": "linux",
        "uptime": uptime,
        "config_drive": config_drive,
        "num_cpus": st.vcpus,
        "num_nics": st.nics.len(),
        "num_disks": st.disks.len(),
        "cpu_details": cpu_details,
        "nic_details": nic_details,
        "disk_details": disk_details,
        // Nova's libvirt driver divides libvirt's KiB by Mi (so the unit is GiB).
        "memory_details": {"maximum": st.max_memory_kib >> 20, "used": st.memory_kib >> 20},
        "legacy": legacy,
    })
}
