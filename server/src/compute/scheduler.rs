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
    /// The server group the instance is in, with where its other members are.
    pub group: Option<GroupPlacement>,
    /// `same_host` hint: ids of the hosts running the named instances (`Some(empty)`: none
    /// runs, so no host passes, as Nova's SameHostFilter).
    pub same_host: Option<Vec<String>>,
    /// `different_host` hint: ids of the hosts running the named instances.
    pub different_host: Vec<String>,
}

/// A server group's policy as the scheduler applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupPolicy {
    Affinity,
    AntiAffinity,
    SoftAffinity,
    SoftAntiAffinity,
}

impl GroupPolicy {
    pub fn parse(s: &str) -> Option<GroupPolicy> {
        match s {
            "affinity" => Some(GroupPolicy::Affinity),
            "anti-affinity" => Some(GroupPolicy::AntiAffinity),
            "soft-affinity" => Some(GroupPolicy::SoftAffinity),
            "soft-anti-affinity" => Some(GroupPolicy::SoftAntiAffinity),
            _ => None,
        }
    }
}

/// The group of the instance being scheduled: its policy, `max_server_per_host`, and how many
/// of its other members (the instance itself excluded) each host runs, by host id.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPlacement {
    pub policy: GroupPolicy,
    pub max_server_per_host: i64,
    pub members_per_host: std::collections::HashMap<String, i64>,
}

impl GroupPlacement {
    fn members_on(&self, host_id: &str) -> i64 {
        self.members_per_host.get(host_id).copied().unwrap_or(0)
    }

    /// Whether the hard policies let one more member onto this host (the filters' rule and the
    /// database's late check, Nova's `_validate_instance_group_policy`).
    pub fn admits(&self, host_id: &str) -> bool {
        match self.policy {
            GroupPolicy::AntiAffinity => self.members_on(host_id) < self.max_server_per_host.max(1),
            GroupPolicy::Affinity => self.members_per_host.values().all(|n| *n == 0) || self.members_on(host_id) > 0,
            GroupPolicy::SoftAffinity | GroupPolicy::SoftAntiAffinity => true,
        }
    }
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
    /// ServerGroupSoftAffinityWeigher's multiplier.
    pub soft_affinity_weight_multiplier: f64,
    /// ServerGroupSoftAntiAffinityWeigher's multiplier.
    pub soft_anti_affinity_weight_multiplier: f64,
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
            soft_affinity_weight_multiplier: 1.0,
            soft_anti_affinity_weight_multiplier: 1.0,
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
    if let Some(g) = &r.group
        && !g.admits(&h.id)
    {
        return Some(match g.policy {
            GroupPolicy::Affinity => "ServerGroupAffinityFilter",
            _ => "ServerGroupAntiAffinityFilter",
        });
    }
    if r.same_host.as_ref().is_some_and(|hs| !hs.contains(&h.id)) {
        return Some("SameHostFilter");
    }
    if r.different_host.contains(&h.id) {
        return Some("DifferentHostFilter");
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
    weigh_for(hosts, None, s)
}

/// [`weigh`] with the server-group weighers of Nova's `weights/affinity.py`: members of a
/// soft-affinity group on a host raise its weight, of a soft-anti-affinity group lower it
/// (each normalised like every weigher, times its multiplier).
pub fn weigh_for<'a>(
    hosts: &[&'a HostState],
    group: Option<&GroupPlacement>,
    s: &Settings,
) -> Vec<(&'a HostState, f64)> {
    let ram = normalise(&hosts.iter().map(|h| h.free_ram_mb(s)).collect::<Vec<_>>());
    let cpu = normalise(&hosts.iter().map(|h| h.free_vcpus(s)).collect::<Vec<_>>());
    let disk = normalise(&hosts.iter().map(|h| h.free_disk_gb(s)).collect::<Vec<_>>());
    let soft = group.and_then(|g| match g.policy {
        GroupPolicy::SoftAffinity => Some((g, s.soft_affinity_weight_multiplier, 1.0)),
        GroupPolicy::SoftAntiAffinity => Some((g, s.soft_anti_affinity_weight_multiplier, -1.0)),
        _ => None,
    });
    let members = soft
        .map(|(g, _, sign)| normalise(&hosts.iter().map(|h| sign * g.members_on(&h.id) as f64).collect::<Vec<_>>()))
        .unwrap_or_default();
    let mut out: Vec<(&HostState, f64)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut w = s.ram_weight_multiplier * ram[i]
                + s.cpu_weight_multiplier * cpu[i]
                + s.disk_weight_multiplier * disk[i];
            if let Some((_, multiplier, _)) = soft {
                w += multiplier * members[i];
            }
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
    Ok(weigh_for(&passing, r.group.as_ref(), s)
        .into_iter()
        .take(s.max_attempts.max(1))
        .map(|(h, _)| h.id.clone())
        .collect())
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

    fn placement(policy: GroupPolicy, max: i64, members: &[(&str, i64)]) -> GroupPlacement {
        GroupPlacement {
            policy,
            max_server_per_host: max,
            members_per_host: members.iter().map(|(h, n)| (h.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn group_and_host_hint_filters() {
        let s = Settings::default();
        let (a, b) = (host("a", 8, 8192, 100), host("b", 8, 8192, 100));
        let mut r = req(1, 512, 1);
        r.group = Some(placement(GroupPolicy::AntiAffinity, 1, &[("id-a", 1)]));
        assert_eq!(rejection(&a, &r, &s), Some("ServerGroupAntiAffinityFilter"));
        assert_eq!(rejection(&b, &r, &s), None);
        r.group = Some(placement(GroupPolicy::AntiAffinity, 2, &[("id-a", 1)]));
        assert_eq!(rejection(&a, &r, &s), None, "max_server_per_host 2 allows a second");
        r.group = Some(placement(GroupPolicy::Affinity, 1, &[]));
        assert_eq!(rejection(&a, &r, &s), None, "the first member goes anywhere");
        r.group = Some(placement(GroupPolicy::Affinity, 1, &[("id-b", 2)]));
        assert_eq!(rejection(&a, &r, &s), Some("ServerGroupAffinityFilter"));
        assert_eq!(rejection(&b, &r, &s), None);
        r.group = Some(placement(GroupPolicy::SoftAntiAffinity, 1, &[("id-a", 5)]));
        assert_eq!(rejection(&a, &r, &s), None, "soft policies never filter");
        let mut r = req(1, 512, 1);
        r.same_host = Some(vec!["id-b".into()]);
        assert_eq!(rejection(&a, &r, &s), Some("SameHostFilter"));
        assert_eq!(rejection(&b, &r, &s), None);
        r.same_host = Some(vec![]);
        assert_eq!(rejection(&b, &r, &s), Some("SameHostFilter"), "named servers run nowhere");
        let mut r = req(1, 512, 1);
        r.different_host = vec!["id-a".into()];
        assert_eq!(rejection(&a, &r, &s), Some("DifferentHostFilter"));
        assert_eq!(rejection(&b, &r, &s), None);
    }

    #[test]
    fn soft_group_weighers_pull_and_push() {
        let hosts = vec![host("a", 8, 8192, 100), host("b", 8, 8192, 100)];
        let s = Settings::default();
        let mut r = req(1, 512, 1);
        r.group = Some(placement(GroupPolicy::SoftAffinity, 1, &[("id-b", 1)]));
        assert_eq!(select(&hosts, &r, &s).expect("fits")[0], "id-b", "towards the member");
        r.group = Some(placement(GroupPolicy::SoftAntiAffinity, 1, &[("id-a", 1)]));
        assert_eq!(select(&hosts, &r, &s).expect("fits")[0], "id-b", "away from the member");
        r.group = Some(placement(GroupPolicy::SoftAntiAffinity, 1, &[("id-b", 1)]));
        assert_eq!(select(&hosts, &r, &s).expect("fits")[0], "id-a");
        // A zero multiplier switches the weigher off: the RAM weigher decides again.
        let mut busy_b = hosts.clone();
        busy_b[0].memory_mb_used = 4096;
        let off = Settings { soft_anti_affinity_weight_multiplier: 0.0, ..Settings::default() };
        assert_eq!(select(&busy_b, &r, &off).expect("fits")[0], "id-b", "more free RAM wins");
        assert_eq!(
            select(&busy_b, &r, &s).expect("fits")[0],
            "id-a",
            "RAM 1.0 against members 1.0: a tie keeps the input order"
        );
    }
}
