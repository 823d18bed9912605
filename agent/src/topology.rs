//! Guest CPU topology as Nova's `nova/virt/hardware.py` chooses it: flavor extra specs
//! `hw:cpu_sockets|cores|threads` (preferred) and `hw:cpu_max_*` (limits), image properties
//! `hw_cpu_*` / `hw_cpu_max_*` within the flavor's limits; of the (sockets, cores, threads)
//! whose product is the vCPU count, the one matching most preferences, ties broken as Nova's
//! sort (most sockets × cores, then sockets, then threads).

use std::collections::BTreeMap;

/// Nova's default limit per dimension.
const NO_LIMIT: u32 = 65536;

/// (sockets, cores, threads).
pub type Topology = (u32, u32, u32);

fn read(map: &BTreeMap<String, String>, key: &str) -> Result<Option<u32>, String> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("Invalid value {v:?} for {key}: a positive integer is needed")),
    }
}

/// Whether any topology key is set (only then does the domain get a `<topology>`).
pub fn requested(extra_specs: &BTreeMap<String, String>, properties: &BTreeMap<String, String>) -> bool {
    extra_specs.keys().any(|k| {
        k.starts_with("hw:cpu_sockets")
            || k.starts_with("hw:cpu_cores")
            || k.starts_with("hw:cpu_threads")
            || k.starts_with("hw:cpu_max_")
    }) || properties.keys().any(|k| {
        k.starts_with("hw_cpu_sockets")
            || k.starts_with("hw_cpu_cores")
            || k.starts_with("hw_cpu_threads")
            || k.starts_with("hw_cpu_max_")
    })
}

/// The best topology for `vcpus`, or Nova's error message.
pub fn best(
    vcpus: u32,
    extra_specs: &BTreeMap<String, String>,
    properties: &BTreeMap<String, String>,
) -> Result<Topology, String> {
    let dims = ["sockets", "cores", "threads"];
    let mut limit = [NO_LIMIT; 3];
    let mut want = [0u32; 3];
    for (i, d) in dims.iter().enumerate() {
        let flavor_max = read(extra_specs, &format!("hw:cpu_max_{d}"))?.unwrap_or(NO_LIMIT);
        let image_max = read(properties, &format!("hw_cpu_max_{d}"))?;
        if image_max.is_some_and(|m| m > flavor_max) {
            let (fs, fc, ft) = flavor_maxes(extra_specs)?;
            let (is, ic, it) = image_maxes(properties, (fs, fc, ft))?;
            return Err(format!("Image vCPU limits {is}:{ic}:{it} exceeds permitted {fs}:{fc}:{ft}"));
        }
        limit[i] = image_max.unwrap_or(flavor_max);
        let flavor_pref = read(extra_specs, &format!("hw:cpu_{d}"))?;
        let image_pref = read(properties, &format!("hw_cpu_{d}"))?;
        let pref = image_pref.or(flavor_pref).unwrap_or(0);
        if pref > limit[i] {
            return Err(format!(
                "Image vCPU topology {}:{}:{} exceeds permitted {}:{}:{}",
                if i == 0 { pref } else { want[0] },
                if i == 1 { pref } else { want[1] },
                if i == 2 { pref } else { want[2] },
                limit[0],
                limit[1],
                limit[2]
            ));
        }
        want[i] = pref;
    }
    let mut possible = Vec::new();
    for s in 1..=vcpus.min(limit[0]) {
        for c in 1..=vcpus.min(limit[1]) {
            for t in 1..=vcpus.min(limit[2]) {
                if u64::from(s) * u64::from(c) * u64::from(t) == u64::from(vcpus) {
                    possible.push((s, c, t));
                }
            }
        }
    }
    if possible.is_empty() {
        return Err(format!(
            "Requested vCPU limits {}:{}:{} are impossible to satisfy for vcpus count {vcpus}",
            limit[0], limit[1], limit[2]
        ));
    }
    possible.sort_by_key(|t| std::cmp::Reverse((t.0 * t.1, t.0, t.2)));
    let score = |t: &Topology| {
        usize::from(want[0] != 0 && t.0 == want[0])
            + usize::from(want[1] != 0 && t.1 == want[1])
            + usize::from(want[2] != 0 && t.2 == want[2])
    };
    possible.sort_by_key(|t| std::cmp::Reverse(score(t)));
    Ok(possible[0])
}

fn flavor_maxes(specs: &BTreeMap<String, String>) -> Result<Topology, String> {
    Ok((
        read(specs, "hw:cpu_max_sockets")?.unwrap_or(NO_LIMIT),
        read(specs, "hw:cpu_max_cores")?.unwrap_or(NO_LIMIT),
        read(specs, "hw:cpu_max_threads")?.unwrap_or(NO_LIMIT),
    ))
}

fn image_maxes(props: &BTreeMap<String, String>, flavor: Topology) -> Result<Topology, String> {
    Ok((
        read(props, "hw_cpu_max_sockets")?.unwrap_or(flavor.0),
        read(props, "hw_cpu_max_cores")?.unwrap_or(flavor.1),
        read(props, "hw_cpu_max_threads")?.unwrap_or(flavor.2),
    ))
}

/// `domain_xml` with `<cpu>` holding `<topology>` (inside an existing `<cpu>` element, or a new
/// one after `</features>`).
pub fn with_topology(domain_xml: &str, (s, c, t): Topology) -> String {
    let topo = format!("<topology sockets='{s}' cores='{c}' threads='{t}'/>");
    if let Some(i) = domain_xml.find("<cpu mode='host-passthrough'/>") {
        let end = i + "<cpu mode='host-passthrough'/>".len();
        return format!("{}<cpu mode='host-passthrough'>{topo}</cpu>{}", &domain_xml[..i], &domain_xml[end..]);
    }
    match domain_xml.find("</features>\n") {
        Some(i) => {
            let end = i + "</features>\n".len();
            format!("{}  <cpu>{topo}</cpu>\n{}", &domain_xml[..end], &domain_xml[end..])
        }
        None => domain_xml.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn nova_choices() {
        let none = BTreeMap::new();
        // No preference: all sockets (Nova's default).
        assert_eq!(best(4, &none, &none), Ok((4, 1, 1)));
        assert_eq!(best(4, &m(&[("hw:cpu_sockets", "2")]), &none), Ok((2, 2, 1)));
        assert_eq!(best(8, &m(&[("hw:cpu_sockets", "2"), ("hw:cpu_threads", "2")]), &none), Ok((2, 2, 2)));
        assert_eq!(best(4, &m(&[("hw:cpu_max_sockets", "1")]), &none), Ok((1, 4, 1)));
        assert_eq!(best(4, &m(&[("hw:cpu_max_sockets", "2")]), &m(&[("hw_cpu_threads", "2")])), Ok((2, 1, 2)));
        assert_eq!(
            best(3, &m(&[("hw:cpu_max_sockets", "2"), ("hw:cpu_max_cores", "1"), ("hw:cpu_max_threads", "1")]), &none),
            Err("Requested vCPU limits 2:1:1 are impossible to satisfy for vcpus count 3".into())
        );
        assert!(best(4, &m(&[("hw:cpu_max_sockets", "2")]), &m(&[("hw_cpu_max_sockets", "4")])).is_err());
        assert!(best(4, &m(&[("hw:cpu_sockets", "x")]), &none).is_err());
    }

    #[test]
    fn topology_goes_into_the_cpu_element() {
        let x = "<domain>\n  <features>\n    <acpi/>\n  </features>\n  <clock/>\n</domain>";
        let y = with_topology(x, (2, 2, 1));
        assert!(
            y.contains("  </features>\n  <cpu><topology sockets='2' cores='2' threads='1'/></cpu>\n  <clock/>"),
            "{y}"
        );
        let k = with_topology("<cpu mode='host-passthrough'/>", (1, 2, 2));
        assert_eq!(k, "<cpu mode='host-passthrough'><topology sockets='1' cores='2' threads='2'/></cpu>");
    }
}
