//! libvirt XML for Meridian's domains and networks, generated from plain specs.
//!
//! Every value that reaches the XML is escaped; values that pick libvirt features (disk bus,
//! NIC model, machine type) are checked against a fixed list first, so image properties cannot
//! inject elements.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Prefix of every domain and network name the agent owns.
pub const NAME_PREFIX: &str = "meridian-";

/// Nova's SMBIOS system strings (`nova/version.py`'s vendor and product, the family the
/// libvirt driver sets).
pub const SMBIOS_MANUFACTURER: &str = "OpenStack Foundation";
pub const SMBIOS_PRODUCT: &str = "OpenStack Nova";
pub const SMBIOS_FAMILY: &str = "Virtual Machine";

/// The libvirt domain type to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtType {
    /// QEMU with hardware acceleration.
    Kvm,
    /// QEMU with software emulation (TCG).
    Qemu,
    /// libvirt's in-memory test driver.
    Test,
}

impl VirtType {
    /// `kvm` only for a qemu URI on a host whose `/dev/kvm` is usable; `test` for the test
    /// driver; `None` for drivers Meridian does not drive.
    pub fn detect(uri: &str, kvm_usable: bool) -> Option<VirtType> {
        let scheme = uri.split(':').next().unwrap_or_default();
        let driver = scheme.split('+').next().unwrap_or_default();
        match driver {
            "qemu" if kvm_usable => Some(VirtType::Kvm),
            "qemu" => Some(VirtType::Qemu),
            "test" => Some(VirtType::Test),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VirtType::Kvm => "kvm",
            VirtType::Qemu => "qemu",
            VirtType::Test => "test",
        }
    }
}

/// Whether KVM can run guests here: `/dev/kvm` opens read-write *and* the CPU offers
/// hardware virtualisation. A nested host without VT-x/AMD-V can still have an openable
/// `/dev/kvm` (and libvirt then advertises `kvm` domains), but a `type='kvm'` guest there shows
/// "running" and never boots, so the CPU flags decide.
pub fn kvm_usable() -> bool {
    let device = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    device && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| cpu_has_virtualization(&c))
}

/// Whether a `/proc/cpuinfo` text lists `vmx` (Intel) or `svm` (AMD) among a CPU's flags.
pub fn cpu_has_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == "flags").map(|(_, v)| v))
        .any(|flags| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The TCP port of a running domain's VNC server (its live XML: `<graphics type='vnc'
/// port='5900'>`); `None` without one or before QEMU chose it (`port='-1'`).
pub fn vnc_port(domain_xml: &str) -> Option<u16> {
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    doc.descendants()
        .filter(|n| n.has_tag_name("graphics") && n.attribute("type") == Some("vnc"))
        .find_map(|n| n.attribute("port")?.parse::<i32>().ok().and_then(|p| u16::try_from(p).ok()))
        .filter(|p| *p > 0)
}

/// How this agent names its domains on the libvirt daemon, and which libvirt UUID it gives
/// them. Without a tag (the default, one agent per daemon): `meridian-<instance id>` with the
/// instance id as the libvirt UUID. With a tag (agents sharing one daemon, e.g. two hosts on
/// one machine): `meridian-<tag>-<instance id>` and a UUID derived from tag and instance id,
/// since libvirt refuses two domains with one name *or* one UUID, and the source of a cold
/// migration keeps its domain until the confirm. Each agent sees only its own names, so its
/// heartbeat never reports another agent's domain. The instance id stays the SMBIOS serial.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Naming {
    tag: Option<String>,
}

/// Longest domain tag: the names stay short in `virsh list`.
pub const MAX_TAG_LEN: usize = 16;

impl Naming {
    /// `tag`: lowercase letters and digits, at most [`MAX_TAG_LEN`]; empty means none.
    pub fn new(tag: Option<&str>) -> Result<Naming, String> {
        let Some(tag) = tag.filter(|t| !t.is_empty()) else {
            return Ok(Naming::default());
        };
        let ok = tag.len() <= MAX_TAG_LEN && tag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            return Err(format!("domain tag {tag:?}: use at most {MAX_TAG_LEN} lowercase letters and digits"));
        }
        Ok(Naming { tag: Some(tag.to_string()) })
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The domain name of an instance.
    pub fn domain(&self, instance_id: &Uuid) -> String {
        match &self.tag {
            None => format!("{NAME_PREFIX}{instance_id}"),
            Some(t) => format!("{NAME_PREFIX}{t}-{instance_id}"),
        }
    }

    /// The instance id of one of this agent's domain names; `None` for anything else
    /// (another agent's domains included: a tag never parses as a UUID and a UUID never
    /// starts with `<tag>-`, whose tag is shorter than 8 hex digits or not hex at all).
    pub fn instance_of(&self, domain_name: &str) -> Option<Uuid> {
        let rest = domain_name.strip_prefix(NAME_PREFIX)?;
        let id = match &self.tag {
            None => rest,
            Some(t) => rest.strip_prefix(t.as_str())?.strip_prefix('-')?,
        };
        // Only the canonical hyphenated form: `Uuid::parse_str` also takes braces, `urn:`.
        (id.len() == 36).then(|| Uuid::parse_str(id).ok()).flatten()
    }

    /// The libvirt (and SMBIOS system) UUID of an instance's domain: the instance id, or with a
    /// tag a name-based (MD5, version 3) UUID of tag and instance id, stable across restarts.
    pub fn domain_uuid(&self, instance_id: &Uuid) -> Uuid {
        match &self.tag {
            None => *instance_id,
            Some(t) => {
                use md5::Digest as _;
                let mut h = md5::Md5::new();
                h.update(instance_id.as_bytes());
                h.update(t.as_bytes());
                uuid::Builder::from_md5_bytes(h.finalize().into()).into_uuid()
            }
        }
    }
}

/// The libvirt network for a Meridian network.
pub fn network_name(network_id: &str) -> String {
    format!("{NAME_PREFIX}{network_id}")
}

/// A bridge name that fits Linux's 15 characters: `mrd-` and 11 characters of the network id.
pub fn bridge_name(network_id: &str) -> String {
    let short: String = network_id.chars().filter(char::is_ascii_alphanumeric).take(11).collect();
    format!("mrd-{}", short.to_ascii_lowercase())
}

/// Disk bus, from the image's `hw_disk_bus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Scsi,
    Sata,
    Ide,
}

impl DiskBus {
    pub fn from_property(value: Option<&str>) -> Result<DiskBus, String> {
        match value.unwrap_or("virtio") {
            "virtio" => Ok(DiskBus::Virtio),
            "scsi" => Ok(DiskBus::Scsi),
            "sata" => Ok(DiskBus::Sata),
            "ide" => Ok(DiskBus::Ide),
            other => Err(format!("unsupported hw_disk_bus {other:?}")),
        }
    }
    fn bus(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Scsi => "scsi",
            DiskBus::Sata => "sata",
            DiskBus::Ide => "ide",
        }
    }
    fn dev(self) -> &'static str {
        match self {
            DiskBus::Virtio => "vda",
            DiskBus::Scsi | DiskBus::Sata => "sda",
            DiskBus::Ide => "hda",
        }
    }
    /// The root disk as the guest kernel names it.
    pub fn root_dev(self) -> &'static str {
        self.dev()
    }
    /// The `n`th device on the bus (0 is the root disk; then ephemeral, swap, config drive).
    fn nth_dev(self, n: usize) -> String {
        let prefix = match self {
            DiskBus::Virtio => "vd",
            DiskBus::Scsi | DiskBus::Sata => "sd",
            DiskBus::Ide => "hd",
        };
        let letter = b'a'.saturating_add(u8::try_from(n.min(25)).unwrap_or(25));
        format!("{prefix}{}", letter as char)
    }
}

/// NIC model from the image's `hw_vif_model`.
pub fn nic_model(value: Option<&str>) -> Result<&'static str, String> {
    match value.unwrap_or("virtio") {
        "virtio" => Ok("virtio"),
        "e1000" => Ok("e1000"),
        "e1000e" => Ok("e1000e"),
        "rtl8139" => Ok("rtl8139"),
        "ne2k_pci" => Ok("ne2k_pci"),
        "pcnet" => Ok("pcnet"),
        other => Err(format!("unsupported hw_vif_model {other:?}")),
    }
}

/// Machine type from the image's `hw_machine_type`: letters, digits, `-`, `.`, `_` only.
pub fn machine_type(value: Option<&str>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(m)
            if !m.is_empty() && m.len() <= 64 && m.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) =>
        {
            Ok(Some(m.to_string()))
        }
        Some(m) => Err(format!("unsupported hw_machine_type {m:?}")),
    }
}

/// One NIC of a domain.
#[derive(Clone, Debug, PartialEq)]
pub struct NicXml {
    pub mac: String,
    /// The libvirt network to plug into; `None` is user-mode networking (no libvirt networks).
    pub network: Option<String>,
    pub model: &'static str,
    pub mtu: Option<u32>,
    /// The host-side tap device's name (`<target dev>`); libvirt picks `vnetN` when `None`.
    pub tap: Option<String>,
}

/// Direct kernel boot.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

/// Everything a domain's XML is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainSpec {
    pub instance_id: Uuid,
    /// The domain's name and libvirt UUID (the agent's [`Naming`]).
    pub naming: Naming,
    /// The instance's display name (kept in the metadata).
    pub display_name: String,
    pub project_id: String,
    pub virt_type: VirtType,
    pub arch: String,
    pub machine: Option<String>,
    pub memory_mb: u64,
    pub vcpus: u32,
    pub disk: PathBuf,
    pub disk_bus: DiskBus,
    pub console_log: PathBuf,
    pub nics: Vec<NicXml>,
    pub kernel: Option<KernelBoot>,
    /// The config drive image (raw), attached read-only after the root disk.
    pub config_drive: Option<PathBuf>,
    /// Boot from volume: the root disk's `<disk>` element (the volume as `vda`), which replaces
    /// the image disk at `disk`.
    pub root_volume: Option<String>,
    /// Other volumes of the build, `<disk>` elements with their own targets, after the rest.
    pub volumes: Vec<String>,
    /// The ephemeral disks (raw; the flavor's one, or those the server's mappings asked for),
    /// the devices after the root disk on its bus (`vdb`, `vdc`, …).
    pub ephemerals: Vec<PathBuf>,
    /// The swap disk (raw), the device after the ephemeral ones (`vdc`, or `vdb` without
    /// one): Nova's order, before the config drive.
    pub swap: Option<PathBuf>,
}

/// Escapes text for an XML attribute (single-quoted) or element body.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

fn path(p: &Path) -> String {
    esc(&p.to_string_lossy())
}

/// The domain XML for `spec`.
pub fn domain_xml(spec: &DomainSpec) -> String {
    let mut x = String::new();
    let emulated = spec.virt_type != VirtType::Test;
    // `write!` to a String cannot fail.
    let _ = writeln!(x, "<domain type='{}'>", spec.virt_type.as_str());
    let _ = writeln!(x, "  <name>{}</name>", spec.naming.domain(&spec.instance_id));
    let domain_uuid = spec.naming.domain_uuid(&spec.instance_id);
    let _ = writeln!(x, "  <uuid>{domain_uuid}</uuid>");
    // libvirt refuses titles with line breaks.
    let title = spec.display_name.replace(['\n', '\r'], " ");
    let _ = writeln!(x, "  <title>{}</title>", esc(&title));
    x.push_str("  <metadata>\n");
    let _ = writeln!(
        x,
        "    <meridian:instance xmlns:meridian='https://meridian.dev/xmlns/agent/1'>\
         <meridian:name>{}</meridian:name><meridian:project>{}</meridian:project>\
         </meridian:instance>",
        esc(&spec.display_name),
        esc(&spec.project_id)
    );
    x.push_str("  </metadata>\n");
    // Nova's SMBIOS identity (`_get_guest_config_sysinfo`, serial = the uuid as with
    // `sysinfo_serial = unique`): cloud-init's ds-identify recognises OpenStack by it and then
    // looks for the metadata service even without a config drive.
    x.push_str("  <sysinfo type='smbios'>\n    <system>\n");
    for (name, value) in [
        ("manufacturer", SMBIOS_MANUFACTURER),
        ("product", SMBIOS_PRODUCT),
        ("version", env!("CARGO_PKG_VERSION")),
        ("serial", &spec.instance_id.to_string()),
        // libvirt refuses a sysinfo UUID other than the domain's.
        ("uuid", &domain_uuid.to_string()),
        ("family", SMBIOS_FAMILY),
    ] {
        let _ = writeln!(x, "      <entry name='{name}'>{}</entry>", esc(value));
    }
    x.push_str("    </system>\n  </sysinfo>\n");
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", spec.memory_mb);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", spec.vcpus);
    x.push_str("  <os>\n");
    match &spec.machine {
        Some(m) => {
            let _ = writeln!(x, "    <type arch='{}' machine='{}'>hvm</type>", esc(&spec.arch), esc(m));
        }
        None => {
            let _ = writeln!(x, "    <type arch='{}'>hvm</type>", esc(&spec.arch));
        }
    }
    match &spec.kernel {
        Some(k) => {
            let _ = writeln!(x, "    <kernel>{}</kernel>", path(&k.kernel));
            if let Some(initrd) = &k.initrd {
                let _ = writeln!(x, "    <initrd>{}</initrd>", path(initrd));
            }
            if let Some(cmdline) = &k.cmdline {
                let _ = writeln!(x, "    <cmdline>{}</cmdline>", esc(cmdline));
            }
        }
        None => x.push_str("    <boot dev='hd'/>\n"),
    }
    x.push_str("    <smbios mode='sysinfo'/>\n");
    x.push_str("  </os>\n");
    x.push_str("  <features>\n    <acpi/>\n    <apic/>\n  </features>\n");
    if spec.virt_type == VirtType::Kvm {
        x.push_str("  <cpu mode='host-passthrough'/>\n");
    }
    x.push_str("  <clock offset='utc'/>\n");
    x.push_str("  <on_poweroff>destroy</on_poweroff>\n");
    x.push_str("  <on_reboot>restart</on_reboot>\n");
    x.push_str("  <on_crash>destroy</on_crash>\n");
    x.push_str("  <devices>\n");
    if spec.disk_bus == DiskBus::Scsi {
        x.push_str("    <controller type='scsi' model='virtio-scsi'/>\n");
    }
    let root_dev = match &spec.root_volume {
        Some(disk) => {
            let _ = writeln!(x, "    {disk}");
            "vda"
        }
        None => {
            x.push_str("    <disk type='file' device='disk'>\n");
            x.push_str("      <driver name='qemu' type='qcow2'/>\n");
            let _ = writeln!(x, "      <source file='{}'/>", path(&spec.disk));
            let _ = writeln!(x, "      <target dev='{}' bus='{}'/>", spec.disk_bus.dev(), spec.disk_bus.bus());
            x.push_str("    </disk>\n");
            spec.disk_bus.dev()
        }
    };
    // The flavor's local disks follow the root disk on its bus, in Nova's order.
    let mut locals = 1;
    for file in spec.ephemerals.iter().chain(&spec.swap) {
        x.push_str("    <disk type='file' device='disk'>\n");
        x.push_str("      <driver name='qemu' type='raw'/>\n");
        let _ = writeln!(x, "      <source file='{}'/>", path(file));
        let _ = writeln!(x, "      <target dev='{}' bus='{}'/>", spec.disk_bus.nth_dev(locals), spec.disk_bus.bus());
        x.push_str("    </disk>\n");
        locals += 1;
    }
    if let Some(drive) = &spec.config_drive {
        // QEMU's IDE/SATA disks cannot be read-only, so there the drive is a CD-ROM (as Nova's
        // default); virtio and SCSI take a read-only disk, which needs no CD-ROM driver.
        let device = if matches!(spec.disk_bus, DiskBus::Ide | DiskBus::Sata) { "cdrom" } else { "disk" };
        let _ = writeln!(x, "    <disk type='file' device='{device}'>");
        x.push_str("      <driver name='qemu' type='raw'/>\n");
        let _ = writeln!(x, "      <source file='{}'/>", path(drive));
        // The server names volumes' devices after a requested drive; one the host adds by
        // its own policy takes the first name no volume has.
        let mut taken: Vec<String> = spec.volumes.iter().filter_map(|d| disk_target(d)).collect();
        taken.extend((1..locals).map(|n| spec.disk_bus.nth_dev(n)));
        let next = spec.disk_bus.nth_dev(locals);
        let (dev, bus) = if root_dev == spec.disk_bus.dev() && !taken.contains(&next) {
            (next, spec.disk_bus.bus())
        } else {
            let free = (b'b'..=b'z').map(|c| format!("vd{}", c as char)).find(|d| !taken.contains(d));
            (free.unwrap_or_else(|| "vdz".into()), "virtio")
        };
        let _ = writeln!(x, "      <target dev='{}' bus='{}'/>", esc(&dev), bus);
        x.push_str("      <readonly/>\n    </disk>\n");
    }
    for disk in &spec.volumes {
        let _ = writeln!(x, "    {disk}");
    }
    for nic in &spec.nics {
        match &nic.network {
            Some(net) => {
                x.push_str("    <interface type='network'>\n");
                let _ = writeln!(x, "      <mac address='{}'/>", esc(&nic.mac));
                let _ = writeln!(x, "      <source network='{}'/>", esc(net));
                if let Some(tap) = &nic.tap {
                    let _ = writeln!(x, "      <target dev='{}'/>", esc(tap));
                }
            }
            None => {
                x.push_str("    <interface type='user'>\n");
                let _ = writeln!(x, "      <mac address='{}'/>", esc(&nic.mac));
            }
        }
        let _ = writeln!(x, "      <model type='{}'/>", nic.model);
        if let Some(mtu) = nic.mtu {
            let _ = writeln!(x, "      <mtu size='{mtu}'/>");
        }
        x.push_str("    </interface>\n");
    }
    if emulated {
        // A pty keeps `virsh console` working; virtlogd copies everything to the log file.
        x.push_str("    <serial type='pty'>\n");
        let _ = writeln!(x, "      <log file='{}' append='on'/>", path(&spec.console_log));
        x.push_str("      <target port='0'/>\n    </serial>\n");
        x.push_str("    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n");
        // The VNC console: QEMU listens on the host's loopback only (a free port from 5900);
        // the agent bridges it to the server's websocket proxy, never anyone else.
        x.push_str("    <graphics type='vnc' autoport='yes' listen='127.0.0.1'>\n");
        x.push_str("      <listen type='address' address='127.0.0.1'/>\n    </graphics>\n");
        x.push_str("    <video>\n      <model type='vga'/>\n    </video>\n");
        x.push_str("    <memballoon model='virtio'/>\n");
        x.push_str("    <rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>\n");
    } else {
        x.push_str("    <serial type='file'>\n");
        let _ = writeln!(x, "      <source path='{}'/>", path(&spec.console_log));
        x.push_str("      <target port='0'/>\n    </serial>\n");
    }
    x.push_str("  </devices>\n</domain>\n");
    x
}

/// A NAT network with static DHCP entries for one Meridian network.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSpec {
    pub name: String,
    pub bridge: String,
    pub mtu: Option<u32>,
    /// The host side of the bridge (the subnet's gateway) and the prefix length; without
    /// one the network is isolated (no NAT, no DHCP).
    pub ip: Option<(Ipv4Addr, u8)>,
    /// Static leases: MAC, IP.
    pub hosts: Vec<(String, String)>,
}

/// One `<host>` entry of a network's DHCP section. No host name: instance names need not be
/// unique, and libvirt refuses two entries with one name.
/// The disks of a domain definition: (target dev, source file or network name), read with a
/// parser. Unreadable XML has none.
pub fn disks(domain_xml: &str) -> Vec<(String, String)> {
    let Ok(doc) = roxmltree::Document::parse(domain_xml) else { return Vec::new() };
    doc.descendants()
        .filter(|n| n.has_tag_name("disk"))
        .filter_map(|d| {
            let dev = d.children().find(|c| c.has_tag_name("target"))?.attribute("dev")?.to_string();
            let source = d
                .children()
                .find(|c| c.has_tag_name("source"))
                .and_then(|s| s.attribute("file").or(s.attribute("name")))
                .unwrap_or_default()
                .to_string();
            Some((dev, source))
        })
        .collect()
}

/// The target devs of a domain's writable file disks (not CD-ROMs, not read-only): the ones a
/// block migration copies. A read-only config drive is made again on the destination.
pub fn writable_disks(domain_xml: &str) -> Vec<String> {
    let Ok(doc) = roxmltree::Document::parse(domain_xml) else { return Vec::new() };
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("disk") && n.attribute("type") == Some("file") && n.attribute("device") == Some("disk")
        })
        .filter(|d| !d.children().any(|c| c.has_tag_name("readonly") || c.has_tag_name("shareable")))
        .filter_map(|d| d.children().find(|c| c.has_tag_name("target"))?.attribute("dev").map(str::to_string))
        .collect()
}

/// The target dev of a `<disk>` element.
fn disk_target(disk_xml: &str) -> Option<String> {
    disks(&format!("<devices>{disk_xml}</devices>")).into_iter().next().map(|(d, _)| d)
}

/// `domain_xml` with `disk_xml` added to its devices; `None` when a disk with the same target
/// is already there (or the XML cannot be read). Positions come from the parser.
pub fn with_disk(domain_xml: &str, disk_xml: &str) -> Option<String> {
    let target = disk_target(disk_xml)?;
    if disks(domain_xml).iter().any(|(d, _)| *d == target) {
        return None;
    }
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let devices = doc.descendants().find(|n| n.has_tag_name("devices"))?;
    let end = devices.range().end;
    let close = domain_xml[..end].rfind("</devices>")?;
    Some(format!("{}  {disk_xml}\n  {}", &domain_xml[..close], &domain_xml[close..]))
}

/// `domain_xml` without the disk whose target is `disk_xml`'s; `None` when there is none.
pub fn without_disk(domain_xml: &str, disk_xml: &str) -> Option<String> {
    let target = disk_target(disk_xml)?;
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let disk = doc.descendants().filter(|n| n.has_tag_name("disk")).find(|d| {
        d.children().find(|c| c.has_tag_name("target")).and_then(|t| t.attribute("dev")) == Some(target.as_str())
    })?;
    let r = disk.range();
    Some(format!("{}{}", &domain_xml[..r.start], &domain_xml[r.end..]))
}

/// The `<interface>` device XML for `nic`, as the domain XML writes it (for hot plug).
pub fn interface_xml(nic: &NicXml) -> String {
    let mut x = String::new();
    match &nic.network {
        Some(net) => {
            x.push_str("<interface type='network'>");
            let _ = write!(x, "<mac address='{}'/>", esc(&nic.mac));
            let _ = write!(x, "<source network='{}'/>", esc(net));
            if let Some(tap) = &nic.tap {
                let _ = write!(x, "<target dev='{}'/>", esc(tap));
            }
        }
        None => {
            x.push_str("<interface type='user'>");
            let _ = write!(x, "<mac address='{}'/>", esc(&nic.mac));
        }
    }
    let _ = write!(x, "<model type='{}'/>", nic.model);
    if let Some(mtu) = nic.mtu {
        let _ = write!(x, "<mtu size='{mtu}'/>");
    }
    x.push_str("</interface>");
    x
}

/// The interfaces of a domain XML: (MAC, host-side `<target dev>` if any), in order.
pub fn interfaces(domain_xml: &str) -> Vec<(String, Option<String>)> {
    let Ok(doc) = roxmltree::Document::parse(domain_xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("interface") && n.parent().is_some_and(|p| p.has_tag_name("devices")))
        .filter_map(|i| {
            let mac = i.children().find(|c| c.has_tag_name("mac"))?.attribute("address")?.to_ascii_lowercase();
            let dev =
                i.children().find(|c| c.has_tag_name("target")).and_then(|t| t.attribute("dev")).map(str::to_string);
            Some((mac, dev))
        })
        .collect()
}

/// A running domain's migratable definition rewritten for another host (Nova's
/// `get_updated_guest_xml`): its `<name>`, the files of the local disks named in `disks` (by
/// target dev) and the serial console's log file. Positions come from the parser; every other
/// byte is kept, so the definition stays the one libvirt checks the destination against.
pub fn for_destination(
    domain_xml: &str,
    name: &str,
    disks: &std::collections::BTreeMap<String, String>,
    console_log: Option<&str>,
) -> Result<String, String> {
    let doc = roxmltree::Document::parse(domain_xml).map_err(|e| format!("unreadable domain XML: {e}"))?;
    let root = doc.root_element();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let name_text = root
        .children()
        .find(|c| c.has_tag_name("name"))
        .and_then(|n| n.first_child())
        .filter(roxmltree::Node::is_text)
        .ok_or("the domain XML has no name")?;
    edits.push((name_text.range(), esc(name)));
    let mut moved = 0;
    for disk in doc.descendants().filter(|n| n.has_tag_name("disk")) {
        let Some(dev) = disk.children().find(|c| c.has_tag_name("target")).and_then(|t| t.attribute("dev")) else {
            continue;
        };
        let Some(path) = disks.get(dev) else { continue };
        let source = disk.children().find(|c| c.has_tag_name("source"));
        let Some(file) = source.and_then(|s| s.attribute_node("file")) else {
            return Err(format!("disk {dev} has no file to move"));
        };
        edits.push((file.range_value(), esc(path)));
        moved += 1;
    }
    if moved != disks.len() {
        return Err(format!("the destination named {} disks, the domain has {moved} of them", disks.len()));
    }
    if let Some(log) = console_log {
        for node in doc.descendants().filter(|n| n.has_tag_name("log")) {
            if let Some(file) = node.attribute_node("file") {
                edits.push((file.range_value(), esc(log)));
            }
        }
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = domain_xml.to_string();
    for (range, text) in edits {
        out.replace_range(range, &text);
    }
    Ok(out)
}

/// The `<model type>` of the domain's first interface.
pub fn interface_model(domain_xml: &str) -> Option<&'static str> {
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let iface = doc.descendants().find(|n| n.has_tag_name("interface"))?;
    let model = iface.children().find(|c| c.has_tag_name("model"))?.attribute("type")?;
    nic_model(Some(model)).ok()
}

/// The libvirt network the interface with `mac` is plugged into.
pub fn interface_network(domain_xml: &str, mac: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let iface = doc.descendants().filter(|n| n.has_tag_name("interface")).find(|i| {
        i.children()
            .find(|c| c.has_tag_name("mac"))
            .and_then(|m| m.attribute("address"))
            .is_some_and(|a| a.eq_ignore_ascii_case(mac))
    })?;
    iface.children().find(|c| c.has_tag_name("source"))?.attribute("network").map(str::to_string)
}

/// The MAC address an `<interface>` XML names.
fn interface_mac(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let root = doc.root_element();
    if !root.has_tag_name("interface") {
        return None;
    }
    root.children().find(|c| c.has_tag_name("mac"))?.attribute("address").map(str::to_ascii_lowercase)
}

/// `domain_xml` with `iface_xml` added to its devices; `None` when an interface with the same
/// MAC is already there (or either XML cannot be read).
pub fn with_interface(domain_xml: &str, iface_xml: &str) -> Option<String> {
    let mac = interface_mac(iface_xml)?;
    if interfaces(domain_xml).iter().any(|(m, _)| *m == mac) {
        return None;
    }
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let devices = doc.descendants().find(|n| n.has_tag_name("devices"))?;
    let end = devices.range().end;
    let close = domain_xml[..end].rfind("</devices>")?;
    Some(format!("{}  {iface_xml}\n  {}", &domain_xml[..close], &domain_xml[close..]))
}

/// `domain_xml` without the interface with `iface_xml`'s MAC; `None` when there is none.
pub fn without_interface(domain_xml: &str, iface_xml: &str) -> Option<String> {
    let mac = interface_mac(iface_xml)?;
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let iface = doc.descendants().filter(|n| n.has_tag_name("interface")).find(|i| {
        i.children()
            .find(|c| c.has_tag_name("mac"))
            .and_then(|m| m.attribute("address"))
            .is_some_and(|a| a.eq_ignore_ascii_case(&mac))
    })?;
    let r = iface.range();
    Some(format!("{}{}", &domain_xml[..r.start], &domain_xml[r.end..]))
}

pub fn dhcp_host_xml(mac: &str, ip: &str) -> String {
    format!("<host mac='{}' ip='{}'/>", esc(mac), esc(ip))
}

/// The network XML for `spec`. DHCP hands out only the static entries (no range), so the
/// addresses stay the ones Meridian's IPAM chose.
pub fn network_xml(spec: &NetworkSpec) -> String {
    let mut x = String::new();
    x.push_str("<network>\n");
    let _ = writeln!(x, "  <name>{}</name>", esc(&spec.name));
    if spec.ip.is_some() {
        x.push_str("  <forward mode='nat'/>\n");
    }
    let _ = writeln!(x, "  <bridge name='{}' stp='on' delay='0'/>", esc(&spec.bridge));
    if let Some(mtu) = spec.mtu {
        let _ = writeln!(x, "  <mtu size='{mtu}'/>");
    }
    if let Some((gateway, prefix)) = spec.ip {
        let _ = writeln!(x, "  <ip address='{gateway}' prefix='{prefix}'>");
        x.push_str("    <dhcp>\n");
        for (mac, ip) in &spec.hosts {
            let _ = writeln!(x, "      {}", dhcp_host_xml(mac, ip));
        }
        x.push_str("    </dhcp>\n  </ip>\n");
    }
    x.push_str("</network>\n");
    x
}

/// What the agent reads back from a libvirt network's XML (parsed, never searched as text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// `<bridge name>`: where dnsmasq listens (for releasing leases).
    pub bridge: Option<String>,
    /// The static DHCP entries (`<ip><dhcp><host mac ip>`), MACs in lower case.
    pub dhcp_hosts: Vec<DhcpHost>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: Option<String>,
    pub ip: Option<String>,
}

impl NetworkInfo {
    /// Parses `<network>` XML as libvirt returns it.
    pub fn parse(xml: &str) -> Result<NetworkInfo, roxmltree::Error> {
        let doc = roxmltree::Document::parse(xml)?;
        let root = doc.root_element();
        let bridge = root.children().find(|n| n.has_tag_name("bridge")).and_then(|b| b.attribute("name"));
        let dhcp_hosts = root
            .children()
            .filter(|n| n.has_tag_name("ip"))
            .flat_map(|ip| ip.children().filter(|n| n.has_tag_name("dhcp")))
            .flat_map(|dhcp| dhcp.children().filter(|n| n.has_tag_name("host")))
            .map(|h| DhcpHost {
                mac: h.attribute("mac").map(str::to_ascii_lowercase),
                ip: h.attribute("ip").map(str::to_string),
            })
            .collect();
        Ok(NetworkInfo { bridge: bridge.map(str::to_string), dhcp_hosts })
    }

    /// The entry for `mac` (any case), if any.
    pub fn host_with_mac(&self, mac: &str) -> Option<&DhcpHost> {
        self.dhcp_hosts.iter().find(|h| h.mac.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(mac)))
    }

    /// The entry holding `ip`, if any.
    pub fn host_with_ip(&self, ip: &str) -> Option<&DhcpHost> {
        self.dhcp_hosts.iter().find(|h| h.ip.as_deref() == Some(ip))
    }
}

/// The host's architecture from libvirt's capabilities XML: `<host><cpu><arch>`, not a guest's.
pub fn host_arch(capabilities: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(capabilities).ok()?;
    let host = doc.root_element().children().find(|n| n.has_tag_name("host"))?;
    let cpu = host.children().find(|n| n.has_tag_name("cpu"))?;
    let arch = cpu.children().find(|n| n.has_tag_name("arch"))?.text()?.trim();
    (!arch.is_empty()).then(|| arch.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(virt_type: VirtType) -> DomainSpec {
        DomainSpec {
            instance_id: Uuid::parse_str("0e7c1c1e-1111-4222-8333-444455556666").expect("uuid"),
            naming: Naming::default(),
            display_name: "web <1>".into(),
            project_id: "p1".into(),
            virt_type,
            arch: "x86_64".into(),
            machine: None,
            memory_mb: 512,
            vcpus: 2,
            disk: "/var/lib/meridian/instances/x/disk".into(),
            disk_bus: DiskBus::Virtio,
            console_log: "/var/lib/meridian/instances/x/console.log".into(),
            nics: vec![],
            kernel: None,
            config_drive: None,
            root_volume: None,
            ephemerals: Vec::new(),
            swap: None,
            volumes: Vec::new(),
        }
    }

    /// The text of every `tag` element, in document order. Parsing also checks that the
    /// generated XML is well-formed.
    fn element<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
        let doc = roxmltree::Document::parse(xml).expect("well-formed XML");
        doc.descendants().filter(|n| n.has_tag_name(tag)).map(|n| &xml[n.range()]).collect()
    }

    #[test]
    fn qemu_without_kvm_is_plain_emulation() {
        let xml = domain_xml(&spec(VirtType::Qemu));
        assert!(xml.starts_with("<domain type='qemu'>"));
        assert!(xml.contains("<name>meridian-0e7c1c1e-1111-4222-8333-444455556666</name>"));
        assert!(xml.contains("<uuid>0e7c1c1e-1111-4222-8333-444455556666</uuid>"));
        assert!(xml.contains("<memory unit='MiB'>512</memory>"));
        assert!(xml.contains("<vcpu>2</vcpu>"));
        assert!(xml.contains("<title>web &lt;1&gt;</title>"));
        let mut multi = spec(VirtType::Test);
        multi.display_name = "a\nb".into();
        assert!(domain_xml(&multi).contains("<title>a b</title>"));
        assert!(!xml.contains("host-passthrough"));
        assert!(xml.contains("<boot dev='hd'/>"));
        let disks = element(&xml, "disk");
        assert_eq!(disks.len(), 1);
        assert!(disks[0].contains("<driver name='qemu' type='qcow2'/>"));
        assert!(disks[0].contains("<source file='/var/lib/meridian/instances/x/disk'/>"));
        assert!(disks[0].contains("<target dev='vda' bus='virtio'/>"));
        let serial = element(&xml, "serial");
        assert_eq!(serial.len(), 1);
        assert!(serial[0].starts_with("<serial type='pty'>"));
        assert!(serial[0].contains("<log file='/var/lib/meridian/instances/x/console.log' append='on'/>"));
        assert_eq!(element(&xml, "interface").len(), 0);
    }

    #[test]
    fn guests_carry_novas_smbios_identity() {
        for virt in [VirtType::Qemu, VirtType::Kvm, VirtType::Test] {
            let xml = domain_xml(&spec(virt));
            let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
            let sysinfo = doc.descendants().find(|n| n.has_tag_name("sysinfo")).expect("sysinfo");
            assert_eq!(sysinfo.attribute("type"), Some("smbios"));
            let entry = |name: &str| {
                sysinfo
                    .descendants()
                    .find(|n| n.has_tag_name("entry") && n.attribute("name") == Some(name))
                    .and_then(|n| n.text())
                    .map(str::to_string)
            };
            assert_eq!(entry("manufacturer").as_deref(), Some("OpenStack Foundation"));
            assert_eq!(entry("product").as_deref(), Some("OpenStack Nova"));
            assert_eq!(entry("family").as_deref(), Some("Virtual Machine"));
            assert_eq!(entry("serial").as_deref(), Some("0e7c1c1e-1111-4222-8333-444455556666"));
            assert_eq!(entry("uuid").as_deref(), Some("0e7c1c1e-1111-4222-8333-444455556666"));
            assert!(entry("version").is_some_and(|v| !v.is_empty()));
            let smbios = doc.descendants().find(|n| n.has_tag_name("smbios")).expect("os/smbios");
            assert_eq!(smbios.attribute("mode"), Some("sysinfo"));
            assert!(smbios.parent().is_some_and(|p| p.has_tag_name("os")));
        }
    }

    #[test]
    fn kvm_passes_the_host_cpu_through() {
        let xml = domain_xml(&spec(VirtType::Kvm));
        assert!(xml.starts_with("<domain type='kvm'>"));
        assert!(xml.contains("<cpu mode='host-passthrough'/>"));
    }

    #[test]
    fn qemu_guests_get_a_loopback_vnc_display_and_the_port_is_read_back() {
        let xml = domain_xml(&spec(VirtType::Qemu));
        let graphics = element(&xml, "graphics");
        assert_eq!(graphics.len(), 1);
        assert!(graphics[0].starts_with("<graphics type='vnc' autoport='yes' listen='127.0.0.1'>"));
        assert!(graphics[0].contains("<listen type='address' address='127.0.0.1'/>"));
        assert_eq!(element(&xml, "video").len(), 1);
        assert_eq!(element(&domain_xml(&spec(VirtType::Test)), "graphics").len(), 0);
        let live =
            "<domain><devices><graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'/></devices></domain>";
        assert_eq!(vnc_port(live), Some(5901));
        assert_eq!(vnc_port("<domain><devices><graphics type='vnc' port='-1'/></devices></domain>"), None);
        assert_eq!(vnc_port("<domain><devices/></domain>"), None);
    }

    #[test]
    fn test_driver_gets_a_file_serial() {
        let xml = domain_xml(&spec(VirtType::Test));
        assert!(xml.starts_with("<domain type='test'>"));
        let serial = element(&xml, "serial");
        assert_eq!(serial.len(), 1);
        assert!(serial[0].starts_with("<serial type='file'>"));
        assert!(serial[0].contains("<source path='/var/lib/meridian/instances/x/console.log'/>"));
        assert!(!xml.contains("<memballoon"));
    }

    #[test]
    fn detection_needs_a_qemu_uri_and_usable_kvm() {
        assert_eq!(VirtType::detect("qemu:///system", true), Some(VirtType::Kvm));
        assert_eq!(VirtType::detect("qemu:///system", false), Some(VirtType::Qemu));
        assert_eq!(VirtType::detect("qemu+ssh://h/system", true), Some(VirtType::Kvm));
        assert_eq!(VirtType::detect("test:///default", true), Some(VirtType::Test));
        assert_eq!(VirtType::detect("lxc:///", true), None);
    }

    #[test]
    fn one_interface_per_port() {
        let mut s = spec(VirtType::Qemu);
        s.nics = vec![
            NicXml {
                mac: "fa:16:3e:00:00:01".into(),
                network: Some("meridian-net-a".into()),
                model: "virtio",
                mtu: Some(1450),
                tap: Some("tap0e7c1c1e-11".into()),
            },
            NicXml { mac: "fa:16:3e:00:00:02".into(), network: None, model: "e1000", mtu: None, tap: None },
        ];
        let xml = domain_xml(&s);
        let nics = element(&xml, "interface");
        assert_eq!(nics.len(), 2);
        assert!(nics[0].starts_with("<interface type='network'>"));
        assert!(nics[0].contains("<mac address='fa:16:3e:00:00:01'/>"));
        assert!(nics[0].contains("<source network='meridian-net-a'/>"));
        assert!(nics[0].contains("<model type='virtio'/>"));
        assert!(nics[0].contains("<mtu size='1450'/>"));
        assert!(nics[0].contains("<target dev='tap0e7c1c1e-11'/>"));
        assert!(nics[1].starts_with("<interface type='user'>"));
        assert!(nics[1].contains("<mac address='fa:16:3e:00:00:02'/>"));
        assert!(nics[1].contains("<model type='e1000'/>"));
        assert!(!nics[1].contains("<mtu"));
    }

    #[test]
    fn direct_kernel_boot() {
        let mut s = spec(VirtType::Qemu);
        s.kernel = Some(KernelBoot {
            kernel: "/cache/k1".into(),
            initrd: Some("/cache/r1".into()),
            cmdline: Some("root=/dev/vda console=ttyS0 a<b".into()),
        });
        let xml = domain_xml(&s);
        let os = element(&xml, "os");
        assert_eq!(os.len(), 1);
        assert!(os[0].contains("<kernel>/cache/k1</kernel>"));
        assert!(os[0].contains("<initrd>/cache/r1</initrd>"));
        assert!(os[0].contains("<cmdline>root=/dev/vda console=ttyS0 a&lt;b</cmdline>"));
        assert!(!os[0].contains("<boot"));
    }

    #[test]
    fn image_properties_pick_bus_model_machine() {
        let mut s = spec(VirtType::Qemu);
        s.disk_bus = DiskBus::from_property(Some("scsi")).expect("scsi");
        s.machine = machine_type(Some("q35")).expect("q35");
        let xml = domain_xml(&s);
        assert!(xml.contains("<controller type='scsi' model='virtio-scsi'/>"));
        assert!(xml.contains("<target dev='sda' bus='scsi'/>"));
        assert!(xml.contains("<type arch='x86_64' machine='q35'>hvm</type>"));
        assert!(DiskBus::from_property(Some("floppy")).is_err());
        assert!(nic_model(Some("virtio'/><evil")).is_err());
        assert!(machine_type(Some("pc'/>")).is_err());
    }

    #[test]
    fn network_has_nat_bridge_and_static_hosts() {
        let xml = network_xml(&NetworkSpec {
            name: network_name("3f2a9c1d-aaaa-bbbb-cccc-000000000001"),
            bridge: bridge_name("3f2a9c1d-aaaa-bbbb-cccc-000000000001"),
            mtu: Some(1450),
            ip: Some((Ipv4Addr::new(10, 0, 0, 1), 24)),
            hosts: vec![("fa:16:3e:00:00:01".into(), "10.0.0.5".into())],
        });
        assert!(xml.contains("<name>meridian-3f2a9c1d-aaaa-bbbb-cccc-000000000001</name>"));
        assert!(xml.contains("<forward mode='nat'/>"));
        assert!(xml.contains("<bridge name='mrd-3f2a9c1daaa' stp='on' delay='0'/>"));
        assert!(xml.contains("<ip address='10.0.0.1' prefix='24'>"));
        assert!(xml.contains("<host mac='fa:16:3e:00:00:01' ip='10.0.0.5'/>"));
        assert!(!xml.contains("<range"));
        assert!(bridge_name("3f2a9c1d-aaaa-bbbb-cccc-000000000001").len() <= 15);
    }

    #[test]
    fn names_round_trip() {
        let id = Uuid::new_v4();
        let plain = Naming::default();
        let a = Naming::new(Some("hosta")).expect("tag");
        let b = Naming::new(Some("b2")).expect("tag");
        assert_eq!(plain.domain(&id), format!("meridian-{id}"));
        assert_eq!(a.domain(&id), format!("meridian-hosta-{id}"));
        for n in [&plain, &a, &b] {
            assert_eq!(n.instance_of(&n.domain(&id)), Some(id));
            assert_eq!(n.instance_of("test"), None);
        }
        // Each agent on a shared daemon sees only its own domains.
        assert_eq!(plain.instance_of(&a.domain(&id)), None);
        assert_eq!(a.instance_of(&plain.domain(&id)), None);
        assert_eq!(a.instance_of(&b.domain(&id)), None);
        assert_eq!(plain.instance_of(&format!("meridian-{{{id}}}")), None);
        // Distinct, stable libvirt UUIDs; no tag keeps the instance id (existing guests).
        assert_eq!(plain.domain_uuid(&id), id);
        assert_ne!(a.domain_uuid(&id), id);
        assert_ne!(a.domain_uuid(&id), b.domain_uuid(&id));
        assert_eq!(a.domain_uuid(&id), Naming::new(Some("hosta")).expect("tag").domain_uuid(&id));
        assert_eq!(Naming::new(Some("")).expect("empty"), plain);
        for bad in ["Host", "a-b", "x".repeat(17).as_str(), "a b"] {
            assert!(Naming::new(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tagged_domain_keeps_the_instance_id_as_its_serial() {
        let mut s = spec(VirtType::Qemu);
        s.naming = Naming::new(Some("two")).expect("tag");
        let xml = domain_xml(&s);
        let id = "0e7c1c1e-1111-4222-8333-444455556666";
        let uuid = s.naming.domain_uuid(&s.instance_id).to_string();
        assert!(xml.contains(&format!("<name>meridian-two-{id}</name>")), "{xml}");
        assert!(xml.contains(&format!("<uuid>{uuid}</uuid>")), "{xml}");
        assert!(xml.contains(&format!("<entry name='serial'>{id}</entry>")), "{xml}");
        assert!(xml.contains(&format!("<entry name='uuid'>{uuid}</entry>")), "{xml}");
    }

    #[test]
    fn a_boot_volume_replaces_the_image_disk_and_volumes_follow_the_config_drive() {
        let mut s = spec(VirtType::Qemu);
        s.root_volume = Some(
            "<disk type='file' device='disk'><source file='/v/root.raw'/><target dev='vda' bus='virtio'/></disk>"
                .into(),
        );
        s.volumes = vec![
            "<disk type='file' device='disk'><source file='/v/data.raw'/><target dev='vdc' bus='virtio'/></disk>"
                .into(),
        ];
        s.config_drive = Some("/i/x/disk.config".into());
        let xml = domain_xml(&s);
        let disks = disks(&xml);
        assert_eq!(
            disks,
            vec![
                ("vda".to_string(), "/v/root.raw".to_string()),
                ("vdb".to_string(), "/i/x/disk.config".to_string()),
                ("vdc".to_string(), "/v/data.raw".to_string()),
            ]
        );
        assert!(!xml.contains("qcow2"), "no image disk: {xml}");
        // A volume where the drive would go: the drive takes the next free name.
        s.volumes = vec![
            "<disk type='file' device='disk'><source file='/v/data.raw'/><target dev='vdb' bus='virtio'/></disk>"
                .into(),
        ];
        let names: Vec<String> = super::disks(&domain_xml(&s)).into_iter().map(|(d, _)| d).collect();
        assert_eq!(names, ["vda", "vdc", "vdb"]);
    }

    #[test]
    fn ephemeral_and_swap_follow_the_root_disk_in_novas_order() {
        let mut s = spec(VirtType::Qemu);
        s.ephemerals = vec!["/i/x/disk.eph0".into()];
        s.swap = Some("/i/x/disk.swap".into());
        s.config_drive = Some("/i/x/disk.config".into());
        s.volumes = vec![
            "<disk type='file' device='disk'><source file='/v/data.raw'/><target dev='vde' bus='virtio'/></disk>"
                .into(),
        ];
        let names: Vec<(String, String)> = disks(&domain_xml(&s));
        let want =
            [("vdb", "/i/x/disk.eph0"), ("vdc", "/i/x/disk.swap"), ("vdd", "/i/x/disk.config"), ("vde", "/v/data.raw")];
        assert_eq!(names[1..], want.map(|(d, f)| (d.to_string(), f.to_string())));
        // Raw, writable.
        let xml = domain_xml(&s);
        let eph = element(&xml, "disk").into_iter().find(|d| d.contains("disk.eph0")).expect("eph");
        assert!(eph.contains("<driver name='qemu' type='raw'/>") && !eph.contains("readonly"), "{eph}");
        // Several ephemeral disks (the server's mappings) come in order before the swap.
        s.ephemerals = vec!["/i/x/disk.eph0".into(), "/i/x/disk.eph1".into()];
        s.volumes.clear();
        let names: Vec<(String, String)> = disks(&domain_xml(&s));
        let want = [
            ("vdb", "/i/x/disk.eph0"),
            ("vdc", "/i/x/disk.eph1"),
            ("vdd", "/i/x/disk.swap"),
            ("vde", "/i/x/disk.config"),
        ];
        assert_eq!(names[1..], want.map(|(d, f)| (d.to_string(), f.to_string())));
        // Swap alone takes the second place; on SCSI the names follow the bus.
        s.ephemerals.clear();
        s.disk_bus = DiskBus::Scsi;
        s.volumes.clear();
        let names: Vec<String> = disks(&domain_xml(&s)).into_iter().map(|(d, _)| d).collect();
        assert_eq!(names, ["sda", "sdb", "sdc"]);
    }

    #[test]
    fn config_drive_is_a_read_only_second_disk() {
        let mut s = spec(VirtType::Qemu);
        s.config_drive = Some("/i/x/disk.config".into());
        let xml = domain_xml(&s);
        let disks = element(&xml, "disk");
        assert_eq!(disks.len(), 2);
        assert!(disks[1].starts_with("<disk type='file' device='disk'>"));
        assert!(disks[1].contains("<driver name='qemu' type='raw'/>"));
        assert!(disks[1].contains("<source file='/i/x/disk.config'/>"));
        assert!(disks[1].contains("<target dev='vdb' bus='virtio'/>"));
        assert!(disks[1].contains("<readonly/>"));
        s.disk_bus = DiskBus::Ide;
        let xml = domain_xml(&s);
        let disks = element(&xml, "disk");
        assert!(disks[1].starts_with("<disk type='file' device='cdrom'>"));
        assert!(disks[1].contains("<target dev='hdb' bus='ide'/>"));
    }

    #[test]
    fn kvm_needs_the_cpu_flag_not_only_the_device() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n";
        let amd = "flags\t\t: fpu svm\n";
        let nested = "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor\nvmx flags\t: ept\n";
        assert!(cpu_has_virtualization(intel));
        assert!(cpu_has_virtualization(amd));
        assert!(!cpu_has_virtualization(nested));
        assert!(!cpu_has_virtualization(""));
    }

    #[test]
    fn network_xml_is_read_back_by_parsing() {
        // As libvirt returns it: other quoting, attribute order and extra elements than ours.
        let xml = r#"<network connections='2'>
  <name>meridian-n</name>
  <uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>
  <forward mode="nat"><nat><port start='1024' end='65535'/></nat></forward>
  <bridge stp='on' name="mrd-abc" delay='0'/>
  <mac address='52:54:00:aa:bb:cc'/>
  <!-- <host mac='fa:16:3e:00:00:99' ip='10.0.0.99'/> -->
  <ip address='10.0.0.1' prefix='24'>
    <dhcp>
      <host ip='10.0.0.5' mac='FA:16:3E:00:00:01'/>
      <host mac='fa:16:3e:00:00:02' name='x' ip='10.0.0.6'/>
    </dhcp>
  </ip>
</network>"#;
        let info = NetworkInfo::parse(xml).expect("parse");
        assert_eq!(info.bridge.as_deref(), Some("mrd-abc"));
        assert_eq!(info.dhcp_hosts.len(), 2, "the commented-out entry is no entry");
        assert_eq!(info.host_with_mac("fa:16:3e:00:00:01").and_then(|h| h.ip.as_deref()), Some("10.0.0.5"));
        assert_eq!(info.host_with_ip("10.0.0.6").and_then(|h| h.mac.as_deref()), Some("fa:16:3e:00:00:02"));
        assert!(info.host_with_mac("fa:16:3e:00:00:99").is_none());
        assert!(info.host_with_ip("10.0.0.99").is_none());
        // The network XML we generate reads back the same way.
        let spec = NetworkSpec {
            name: "meridian-n".into(),
            bridge: "mrd-n".into(),
            mtu: None,
            ip: Some((Ipv4Addr::new(10, 0, 0, 1), 24)),
            hosts: vec![("fa:16:3e:00:00:07".into(), "10.0.0.7".into())],
        };
        let ours = NetworkInfo::parse(&network_xml(&spec)).expect("parse ours");
        assert_eq!(ours.bridge.as_deref(), Some("mrd-n"));
        assert_eq!(ours.dhcp_hosts, [DhcpHost { mac: Some("fa:16:3e:00:00:07".into()), ip: Some("10.0.0.7".into()) }]);
        assert!(NetworkInfo::parse("<network><bridge name='x'>").is_err());
    }

    #[test]
    fn arch_comes_from_the_host_section() {
        let caps = "<capabilities><host><cpu><arch>x86_64</arch></cpu></host>\
                    <guest><arch name='i686'/></guest></capabilities>";
        assert_eq!(host_arch(caps).as_deref(), Some("x86_64"));
        // A guest's arch is not the host's, wherever it appears.
        let guest_first = "<capabilities><guest><arch name='i686'><x><arch>i686</arch></x></arch></guest>\
                           <host><cpu><arch> aarch64 </arch></cpu></host></capabilities>";
        assert_eq!(host_arch(guest_first).as_deref(), Some("aarch64"));
        assert_eq!(host_arch("<capabilities/>"), None);
        assert_eq!(host_arch("<capabilities><host><cpu><arch>"), None);
    }

    #[test]
    fn a_definition_is_rewritten_for_the_destination() {
        let src = "<domain type='qemu'>\n  <name>meridian-a-1</name>\n  <devices>\n    \
            <disk type='file' device='disk'><source file='/a/i/disk' index='2'/><target dev='vda' bus='virtio'/></disk>\n    \
            <disk type='file' device='disk'><source file='/a/i/disk.eph0'/><target dev='vdb' bus='virtio'/></disk>\n    \
            <disk type='file' device='cdrom'><source file='/a/i/disk.config'/><target dev='hdd' bus='ide'/><readonly/></disk>\n    \
            <serial type='pty'><log file='/a/i/console.log' append='on'/></serial>\n  </devices>\n</domain>";
        let map: std::collections::BTreeMap<String, String> = [
            ("vda".to_string(), "/b/i/disk".to_string()),
            ("vdb".to_string(), "/b/i/disk.eph0".to_string()),
            ("hdd".to_string(), "/b/x&y/disk.config".to_string()),
        ]
        .into();
        let out = for_destination(src, "meridian-b-1", &map, Some("/b/i/console.log")).expect("rewritten");
        assert!(out.contains("<name>meridian-b-1</name>"));
        assert_eq!(
            disks(&out),
            vec![
                ("vda".to_string(), "/b/i/disk".to_string()),
                ("vdb".to_string(), "/b/i/disk.eph0".to_string()),
                ("hdd".to_string(), "/b/x&y/disk.config".to_string()),
            ]
        );
        assert!(out.contains("<log file='/b/i/console.log' append='on'/>"));
        assert_eq!(writable_disks(src), ["vda", "vdb"]);
        // Everything else is byte for byte the source's.
        assert!(out.contains("index='2'/><target dev='vda' bus='virtio'/>"));
        assert!(!out.contains("/a/i/"));
        // A disk the destination did not prepare, or one it named that is not there, refuses.
        let mut missing = map.clone();
        missing.insert("vdz".into(), "/b/i/nope".into());
        assert!(for_destination(src, "n", &missing, None).is_err());
    }
}
