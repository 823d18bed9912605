//! Host selection as Nova's filter scheduler does it: filter out hosts that cannot take the
//! instance, weigh the rest (normalised RAM, CPU and disk weighers with multipliers: positive
//! spreads, negative packs), and return the best host plus alternates for retries.
//!
//! Pure functions over a snapshot; the atomic claim against the database happens afterwards
//! (see `store::compute_hosts`), so two concurrent boots can never overcommit a host.

/// A host as the scheduler sees it: capacity (already minus reservations) and what is claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct HostState {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub up: bool,
    pub availability_zone: String,
    pub hypervisor_type: String,
    pub cpu_arch: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
    pub vcpus_used: i64,
    pub memory_mb_used: i64,
    pub disk_gb_used: i64,
}

/// What one instance needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
    pub availability_zone: Option<String>,
    /// Image `architecture` property (e.g. `x86_64`), if any.
    pub architecture: Option<String>,
    /// Image `img_hv_type` / `hypervisor_type` property, if any.
    pub hypervisor_type: Option<String>,
    /// Hosts already tried for this build (retries go elsewhere).
    pub ignore_hosts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
    pub disk_allocation_ratio: f64,
    pub ram_weight_multiplier: f64,
    pub cpu_weight_multiplier: f64,
    pub disk_weight_multiplier: f64,
    /// Hosts returned per decision: the choice plus alternates (Nova's `max_attempts`).
    pub max_attempts: usize,
}

impl Default for Settings {
    /// Nova's current defaults (initial allocation ratios 4.0 / 1.0 / 1.0, multipliers 1.0).
    fn default() -> Self {
        Settings {
            cpu_allocation_ratio: 4.0,
            ram_allocation_ratio: 1.0,
            disk_allocation_ratio: 1.0,
            ram_weight_multiplier: 1.0,
            cpu_weight_multiplier: 1.0,
            disk_weight_multiplier: 1.0,
            max_attempts: 3,
        }
    }
}

impl HostState {
    pub fn free_vcpus(&self, s: &Settings) -> f64 {
        self.vcpus as f64 * s.cpu_allocation_ratio - self.vcpus_used as f64
    }
    pub fn free_ram_mb(&self, s: &Settings) -> f64 {
        self.memory_mb as f64 * s.ram_allocation_ratio - self.memory_mb_used as f64
    }
    pub fn free_disk_gb(&self, s: &Settings) -> f64 {
        self.disk_gb as f64 * s.disk_allocation_ratio - self.disk_gb_used as f64
    }
}

/// Why a host was filtered out, by filter name (Nova logs the same names).
pub fn rejection(h: &HostState, r: &Request, s: &Settings) -> Option<&'static str> {
    if r.ignore_hosts.contains(&h.name) {
        return Some("RetryFilter");
    }
    if !h.enabled || !h.up {
        return Some("ComputeFilter");
    }
    if r.availability_zone.as_ref().is_some_and(|az| *az != h.availability_zone) {
        return Some("AvailabilityZoneFilter");
    }
    let arch_ok = r.architecture.as_ref().is_none_or(|a| normalise_arch(a) == normalise_arch(&h.cpu_arch));
    let hv_ok = r.hypervisor_type.as_ref().is_none_or(|t| t.eq_ignore_ascii_case(&h.hypervisor_type));
    if !arch_ok || !hv_ok {
        return Some("ImagePropertiesFilter");
    }
    if (r.vcpus as f64) > h.free_vcpus(s) {
        return Some("VCPU");
    }
    if (r.memory_mb as f64) > h.free_ram_mb(s) {
        return Some("MEMORY_MB");
    }
    if (r.disk_gb as f64) > h.free_disk_gb(s) {
        return Some("DISK_GB");
    }
    None
}

fn normalise_arch(a: &str) -> String {
    match a.to_ascii_lowercase().as_str() {
        "amd64" | "x64" | "x86-64" => "x86_64".into(),
        "arm64" => "aarch64".into(),
        other => other.to_string(),
    }
}

/// Min-max normalisation of one weigher's raw values to [0, 1], as Nova's `normalize`.
fn normalise(raw: &[f64]) -> Vec<f64> {
    let (min, max) = raw.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    if raw.is_empty() || (max - min).abs() < f64::EPSILON {
        return vec![0.0; raw.len()];
    }
    raw.iter().map(|v| (v - min) / (max - min)).collect()
}

/// Hosts that pass every filter, best first; ties keep the input order (stable).
pub fn weigh<'a>(hosts: &[&'a HostState], s: &Settings) -> Vec<(&'a HostState, f64)> {
    let ram = normalise(&hosts.iter().map(|h| h.free_ram_mb(s)).collect::<Vec<_>>());
    let cpu = normalise(&hosts.iter().map(|h| h.free_vcpus(s)).collect::<Vec<_>>());
    let disk = normalise(&hosts.iter().map(|h| h.free_disk_gb(s)).collect::<Vec<_>>());
    let mut out: Vec<(&HostState, f64)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let w = s.ram_weight_multiplier * ram[i]
                + s.cpu_weight_multiplier * cpu[i]
                + s.disk_weight_multiplier * disk[i];
            (*h, w)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// The outcome of filtering when nothing fits.
#[derive(Clone, Debug, PartialEq)]
pub struct NoValidHost {
    /// (host name, filter that rejected it).
    pub rejections: Vec<(String, &'static str)>,
}

impl NoValidHost {
    /// Nova's user-facing fault message.
    pub fn message(&self) -> String {
        "No valid host was found. There are not enough hosts available.".to_string()
    }
}

/// Picks up to `max_attempts` hosts, best first.
pub fn select(hosts: &[HostState], r: &Request, s: &Settings) -> Result<Vec<String>, NoValidHost> {
    let mut rejections = Vec::new();
    let passing: Vec<&HostState> = hosts
        .iter()
        .filter(|h| match rejection(h, r, s) {
            Some(why) => {
                rejections.push((h.name.clone(), why));
                false
            }
            None => true,
        })
        .collect();
    if passing.is_empty() {
        return Err(NoValidHost { rejections });
    }
    Ok(weigh(&passing, s).into_iter().take(s.max_attempts.max(1)).map(|(h, _)| h.id.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, vcpus: i64, ram: i64, disk: i64) -> HostState {
        HostState {
            id: format!("id-{name}"),
            name: name.into(),
            enabled: true,
            up: true,
            availability_zone: "nova".into(),
            hypervisor_type: "QEMU".into(),
            cpu_arch: "x86_64".into(),
            vcpus,
            memory_mb: ram,
            disk_gb: disk,
            vcpus_used: 0,
            memory_mb_used: 0,
            disk_gb_used: 0,
        }
    }

    fn req(vcpus: i64, ram: i64, disk: i64) -> Request {
        Request { vcpus, memory_mb: ram, disk_gb: disk, ..Default::default() }
    }

    #[test]
    fn filters_reject_for_the_right_reason() {
        let s = Settings::default();
        let mut h = host("a", 2, 1024, 10);
        assert_eq!(rejection(&h, &req(1, 512, 1), &s), None);
        assert_eq!(rejection(&h, &req(9, 512, 1), &s), Some("VCPU"), "2 × ratio 4 = 8 vCPUs");
        assert_eq!(rejection(&h, &req(8, 512, 1), &s), None);
        assert_eq!(rejection(&h, &req(1, 2048, 1), &s), Some("MEMORY_MB"));
        assert_eq!(rejection(&h, &req(1, 512, 11), &s), Some("DISK_GB"));
        h.memory_mb_used = 600;
        assert_eq!(rejection(&h, &req(1, 512, 1), &s), Some("MEMORY_MB"), "claims count");
        h.memory_mb_used = 0;
        let mut r = req(1, 512, 1);
        r.availability_zone = Some("other".into());
        assert_eq!(rejection(&h, &r, &s), Some("AvailabilityZoneFilter"));
        let mut r = req(1, 512, 1);
        r.architecture = Some("aarch64".into());
        assert_eq!(rejection(&h, &r, &s), Some("ImagePropertiesFilter"));
        r.architecture = Some("amd64".into());
        assert_eq!(rejection(&h, &r, &s), None, "amd64 is x86_64");
        r.hypervisor_type = Some("qemu".into());
        assert_eq!(rejection(&h, &r, &s), None);
        r.hypervisor_type = Some("xen".into());
        assert_eq!(rejection(&h, &r, &s), Some("ImagePropertiesFilter"));
        h.up = false;
        assert_eq!(rejection(&h, &req(1, 1, 1), &s), Some("ComputeFilter"));
        h.up = true;
        h.enabled = false;
        assert_eq!(rejection(&h, &req(1, 1, 1), &s), Some("ComputeFilter"));
        let mut r = req(1, 1, 1);
        r.ignore_hosts = vec!["a".into()];
        h.enabled = true;
        assert_eq!(rejection(&h, &r, &s), Some("RetryFilter"));
    }

    #[test]
    fn ram_weigher_spreads_and_packs() {
        let mut busy = host("busy", 8, 8192, 100);
        busy.memory_mb_used = 6144;
        let idle = host("idle", 8, 8192, 100);
        let hosts = vec![busy, idle];
        let spread = Settings { cpu_weight_multiplier: 0.0, disk_weight_multiplier: 0.0, ..Settings::default() };
        assert_eq!(select(&hosts, &req(1, 512, 1), &spread).expect("fits")[0], "id-idle");
        let pack = Settings { ram_weight_multiplier: -1.0, ..spread };
        assert_eq!(select(&hosts, &req(1, 512, 1), &pack).expect("fits")[0], "id-busy");
    }

    #[test]
    fn alternates_and_no_valid_host() {
        let hosts: Vec<HostState> = (0..5).map(|i| host(&format!("h{i}"), 4, 4096 + i * 1024, 100)).collect();
        let picked = select(&hosts, &req(1, 512, 1), &Settings::default()).expect("fits");
        assert_eq!(picked, ["id-h4", "id-h3", "id-h2"], "best first, max_attempts = 3");
        let err = select(&hosts, &req(1, 1 << 20, 1), &Settings::default()).expect_err("too big");
        assert_eq!(err.rejections.len(), 5);
        assert!(err.message().starts_with("No valid host was found"));
    }

    #[test]
    fn normalisation_handles_equal_values() {
        assert_eq!(normalise(&[3.0, 3.0]), [0.0, 0.0]);
        assert_eq!(normalise(&[0.0, 5.0, 10.0]), [0.0, 0.5, 1.0]);
    }
}
