//! Meridian's compute agent.
//!
//! Layers, top to bottom:
//! - [`run`]: the protocol loop (register, heartbeat, long-poll, report) and per-instance
//!   queues; [`server`] is the typed HTTP client for `meridian_common::agent`.
//! - [`work`]: validated work items and the durable log of finished ones (idempotency).
//! - [`controller`]: carries out one item; [`lifecycle`] decides, for every state × operation,
//!   whether it may run. [`image_cache`] and [`disk`] prepare the instance's disk, [`xml`]
//!   its libvirt XML.
//! - [`hypervisor`]: the blocking `Hypervisor` trait and its libvirt implementation.
//! - [`firewall`]: security groups and anti-spoofing on the guests' taps (nftables), from the
//!   server's port filters.

pub mod config;
pub mod config_drive;
pub mod console;
pub mod controller;
pub mod credential;
pub mod diagnostics;
pub mod disk;
pub mod firewall;
pub mod hypervisor;
pub mod image_cache;
pub mod inventory;
pub mod lifecycle;
pub mod metadata_proxy;
pub mod ops;
pub mod run;
pub mod server;
pub mod storage;
pub mod topology;
pub mod work;
pub mod xml;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tracing::info;

use crate::config::Args;
use crate::controller::{Controller, ControllerConfig};
use crate::hypervisor::{Hypervisor, Libvirt};
use crate::image_cache::ImageCache;
use crate::inventory::{HostFacts, Reservations};
use crate::run::{Agent, AgentConfig};
use crate::server::ServerClient;
use crate::work::WorkLog;
use crate::xml::VirtType;

/// Sets everything up from the flags and runs the agent until `shutdown` completes.
pub async fn start(args: Args, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let host = match &args.host {
        Some(h) => h.clone(),
        None => config::system_host_name().context("cannot tell the host name; pass --host")?,
    };
    if !config::valid_host(&host) {
        bail!("host name {host:?} may only use letters, digits, '-', '.' and '_'");
    }
    std::fs::create_dir_all(&args.state_dir).with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    // Absolute, because qcow2 overlays and domain XML keep these paths.
    let state_dir = std::fs::canonicalize(&args.state_dir)
        .with_context(|| format!("cannot resolve {}", args.state_dir.display()))?;

    let uri = args.libvirt_uri.clone();
    let hv = tokio::task::spawn_blocking(move || Libvirt::open(&uri))
        .await
        .context("opening libvirt panicked")?
        .map_err(|e| anyhow::anyhow!(controller::chain(&e)))?;
    // Before anything is recorded: metrics recorded earlier would be lost.
    ops::install();
    let hv: Arc<dyn Hypervisor> = Arc::new(hypervisor::timed::Timed(hv));
    let probe = Arc::clone(&hv);
    let info = tokio::task::spawn_blocking(move || probe.host_info())
        .await
        .context("reading host information panicked")?
        .map_err(|e| anyhow::anyhow!(controller::chain(&e)))?;
    let Some(virt_type) = VirtType::detect(&args.libvirt_uri, xml::kvm_usable()) else {
        bail!("libvirt URI {} is not a qemu or test driver URI", args.libvirt_uri);
    };
    info!(
        uri = %info.uri, hypervisor = %info.hypervisor_type, version = info.hypervisor_version,
        arch = %info.arch, vcpus = info.vcpus, memory_mb = info.memory_mb,
        domain_type = virt_type.as_str(), networks = info.supports_networks,
        "connected to libvirt"
    );

    let server = ServerClient::new(&args.server, args.token.as_deref().unwrap_or_default())?;
    let credential_file = credential::path(&state_dir);
    let stored = credential::load(&credential_file)
        .with_context(|| format!("cannot read the host credential {}", credential_file.display()))?;
    if stored.is_none() && args.token.as_deref().is_none_or(|t| t.trim().is_empty()) {
        bail!("no join token (--token) and no host credential in {}: the host cannot register", state_dir.display());
    }
    server.set_credential(stored);
    let host_ip = match args.host_ip {
        Some(ip) => ip.to_string(),
        None => {
            let url = server.base().clone();
            tokio::task::spawn_blocking(move || {
                let h = url.host_str()?.trim_matches(['[', ']']).to_string();
                inventory::local_ip_towards(&h, url.port_or_known_default()?)
            })
            .await
            .ok()
            .flatten()
            .map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
        }
    };

    let firewall = match args.firewall.resolve(virt_type == VirtType::Test) {
        firewall::Mode::Nftables => {
            let fw = firewall::Firewall::new(firewall::Netns(args.firewall_netns.clone()), &args.firewall_table);
            let probe = fw.clone();
            let version = tokio::task::spawn_blocking(move || probe.check())
                .await
                .context("checking nft panicked")?
                .map_err(|e| anyhow::anyhow!(controller::chain(&e)))?;
            info!(%version, table = %args.firewall_table, "firewall: nftables (security groups and anti-spoofing enforced)");
            let enforcer = Arc::new(firewall::Enforcer::new(fw, &state_dir));
            // What the last run applied, before anything else: the server may be away.
            enforcer.restore().await;
            Some(enforcer)
        }
        _ => {
            tracing::warn!("firewall: none (security groups and anti-spoofing are NOT enforced on this host)");
            metrics::gauge!("meridian_agent_firewall_enforcing").set(0.0);
            None
        }
    };

    let images =
        ImageCache::open(&state_dir.join("images"), server.clone(), args.image_cache_max_gb.saturating_mul(1 << 30))
            .context("cannot open the image cache")?;
    metrics::gauge!("meridian_agent_image_cache_bytes").set(images.size() as f64);
    let health = ops::Health { registered: Arc::default(), hv: Arc::clone(&hv) };
    if let Some(addr) = args.metrics_listen {
        let bound = ops::serve(addr, health.clone()).await.with_context(|| format!("cannot listen on {addr}"))?;
        info!(%bound, "serving /healthz, /readyz and /metrics");
    }
    let controller = Controller::new(
        hv,
        Arc::new(images),
        ControllerConfig {
            instances_dir: state_dir.join("instances"),
            virt_type,
            arch: info.arch.clone(),
            supports_networks: info.supports_networks,
            stop_timeout: Duration::from_secs(args.stop_timeout_secs),
            config_drive_always: match args.config_drive {
                config::ConfigDriveMode::Always => true,
                config::ConfigDriveMode::Auto => virt_type != VirtType::Test,
                config::ConfigDriveMode::Never => false,
            },
            config_drive_format: args.config_drive_format,
            availability_zone: args.availability_zone.clone(),
            firewall: firewall.clone(),
            naming: xml::Naming::new(args.domain_tag.as_deref()).map_err(|e| anyhow::anyhow!(e))?,
            migration: migration_endpoint(&args, virt_type, &host_ip),
        },
    )
    .context("cannot create the instances directory")?;
    // The metadata service needs the networks' bridges: libvirt's test driver has none.
    let controller = if virt_type == VirtType::Test || !info.supports_networks {
        info!("metadata proxy skipped: this hypervisor has no network bridges");
        controller
    } else {
        let c = controller.with_metadata_proxies(metadata_proxy::MetadataProxies::new(server.clone()));
        c.restore_metadata_proxies().await;
        c
    };
    let log = WorkLog::open(&state_dir.join("work")).context("cannot open the work log")?;

    let agent = Agent::new(
        AgentConfig {
            host,
            facts: HostFacts {
                availability_zone: args.availability_zone.clone(),
                host_ip,
                reservations: Reservations {
                    vcpus: args.reserved_vcpus,
                    memory_mb: args.reserved_memory_mb,
                    disk_gb: args.reserved_disk_gb,
                },
            },
            state_dir,
            credential_file,
            poll_wait: Duration::from_secs(args.poll_wait_secs.clamp(1, 300)),
        },
        server,
        Arc::new(controller),
        Arc::new(log),
    )
    .with_registered_flag(health.registered);
    let agent = match firewall {
        Some(enforcer) => agent.with_firewall(enforcer),
        None => agent,
    };
    agent.run(shutdown).await;
    Ok(())
}

/// Where this host receives live guests: the flags, else Nova's default scheme
/// (`qemu+tcp://HOST_IP/system`, data to `tcp://HOST_IP`); none on the test driver.
fn migration_endpoint(args: &Args, virt_type: VirtType, host_ip: &str) -> Option<controller::MigrationEndpoint> {
    if virt_type == VirtType::Test {
        return None;
    }
    // An IPv6 literal needs brackets in a URI.
    let host = if host_ip.contains(':') { format!("[{host_ip}]") } else { host_ip.to_string() };
    let address = args.migration_address.as_deref().map_or(host.clone(), |a| a.to_string());
    Some(controller::MigrationEndpoint {
        libvirt_uri: args.migration_uri.clone().unwrap_or_else(|| format!("qemu+tcp://{host}/system")),
        migrate_uri: Some(format!("tcp://{address}")),
    })
}
