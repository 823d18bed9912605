//! Rebuild, rescue and unrescue on the host (issue 17).
//!
//! - Rebuild: the domain goes (its volumes' `<disk>` elements are kept from its definition),
//!   the root disk and config drive are replaced from the new spec, and the domain is defined
//!   and started again with the same ports (same MACs, same tap names, so the port filters
//!   and DHCP entries still match). The old root disk is kept as `disk.rebuild-old` until the
//!   new guest runs. On a host without the domain it is a build.
//! - Rescue: the instance's definition is saved to `unrescue.xml` (synced) before anything
//!   changes; the rescue domain boots a fresh overlay of the rescue image (`disk.rescue`) as
//!   the first disk with the instance's own root disk as the second (Nova's libvirt layout),
//!   same NICs. A repeat finds `unrescue.xml` and the rescue definition in place.
//! - Unrescue: the saved definition is defined again and started, then the rescue disk and
//!   `unrescue.xml` go. A repeat without `unrescue.xml` only makes sure the guest runs.

use std::path::{Path, PathBuf};

use meridian_common::agent::{BuildSpec, ImageSpec};
use tracing::info;
use uuid::Uuid;

use super::{ActionError, Controller, RootDisk};
use crate::disk;
use crate::hypervisor::DomainState;
use crate::image_cache::ImageRef;
use crate::lifecycle::InstanceState;
use crate::xml;

/// Where a rescued instance's own definition waits for the unrescue.
const SAVED_XML: &str = "unrescue.xml";
/// The rescue image's overlay.
const RESCUE_DISK: &str = "disk.rescue";
/// The root disk a rebuild replaces, until the new guest runs.
const OLD_DISK: &str = "disk.rebuild-old";

impl Controller {
    pub(super) async fn rebuild(
        &self,
        id: Uuid,
        spec: &BuildSpec,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), ActionError> {
        progress("rebuild_block_device_mapping");
        let name = self.cfg.naming.domain(&id);
        let dir = self.instance_dir(&id);
        // The volumes plugged into the domain (its definition; a rescued one's saved one).
        let definition = match tokio::fs::read_to_string(dir.join(SAVED_XML)).await {
            Ok(saved) => Some(saved),
            Err(_) => {
                let n = name.clone();
                self.hv(move |hv| match hv.state(&n)? {
                    Some(_) => hv.domain_config_xml(&n).map(Some),
                    None => Ok(None),
                })
                .await?
            }
        };
        let kept = definition.as_deref().map(|x| volume_disks(x, &dir)).unwrap_or_default();
        let n = name.clone();
        self.hv(move |hv| {
            match hv.state(&n)? {
                None => return Ok(()),
                Some(s) if s.is_active() => hv.destroy(&n)?,
                Some(_) => {}
            }
            hv.discard_save(&n)?;
            hv.undefine(&n)
        })
        .await?;
        // The old root disk stays until the new guest runs; the config drive and any rescue
        // leftovers go now (the new spec makes a new drive).
        if dir.join("disk").exists() {
            tokio::fs::rename(dir.join("disk"), dir.join(OLD_DISK)).await.map_err(ActionError::Files)?;
        }
        for f in ["disk.config", RESCUE_DISK, SAVED_XML] {
            remove_file(&dir.join(f)).await?;
        }
        match tokio::fs::remove_dir_all(dir.join("config-drive.d")).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ActionError::Files(e)),
        }
        // The new image's pins replace the old one's (the build records and pins them).
        let images = std::sync::Arc::clone(&self.images);
        let instance = id.to_string();
        tokio::task::spawn_blocking(move || images.unpin_instance(&instance))
            .await
            .map_err(|_| ActionError::Panicked)?;
        let renamed = |task: &str| {
            if task == "spawning" {
                progress("rebuild_spawning");
            }
        };
        self.build_from(id, spec, &renamed, RootDisk::New, true, kept).await?;
        remove_file(&dir.join(OLD_DISK)).await?;
        info!(instance = %id, image = %spec.image.id, "rebuilt");
        Ok(())
    }

    pub(super) async fn rescue(&self, id: Uuid, state: InstanceState, image: &ImageSpec) -> Result<(), ActionError> {
        let name = self.cfg.naming.domain(&id);
        let dir = self.instance_dir(&id);
        let saved = dir.join(SAVED_XML);
        let rescue_disk = dir.join(RESCUE_DISK);
        let n = name.clone();
        let current = self.hv(move |hv| hv.domain_config_xml(&n)).await?;
        let original = match tokio::fs::read_to_string(&saved).await {
            Ok(x) => {
                if is_rescue(&current, &rescue_disk) {
                    // A repeat: the rescue domain is defined already; make sure it runs.
                    if !matches!(state, InstanceState::Running | InstanceState::Paused) {
                        self.start_fresh(&name).await?;
                    }
                    return Ok(());
                }
                x
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_synced(&saved, current.as_bytes()).await?;
                current
            }
            Err(e) => return Err(ActionError::Files(e)),
        };
        let rescue_xml = rescue_domain_xml(&original, &dir.join("disk"), &rescue_disk)
            .ok_or_else(|| ActionError::Invalid("the instance's definition has no root disk to rescue".into()))?;
        // A fresh copy of the rescue image (through the cache, checksum checked).
        let format = disk::qemu_format(&image.disk_format)?;
        let lease = self
            .images
            .acquire(&ImageRef {
                id: image.id.clone(),
                checksum: Some(image.checksum.clone()).filter(|c| !c.is_empty()),
                size: Some(image.size).filter(|s| *s > 0),
            })
            .await?;
        remove_file(&rescue_disk).await?;
        disk::create_overlay(lease.path(), format, &rescue_disk, 0).await?;
        // The overlay needs its base for as long as it exists: recorded and pinned like the
        // instance's own images (released with the instance).
        if let Some(mut record) = self.read_record(&id).await
            && !record.images.contains(&image.id)
        {
            record.images.push(image.id.clone());
            self.write_record(&id, &record).await?;
        }
        self.images.pin(&image.id, &id.to_string());
        drop(lease);
        let n = name.clone();
        self.hv(move |hv| {
            if hv.state(&n)?.is_some_and(DomainState::is_active) {
                hv.destroy(&n)?;
            }
            hv.discard_save(&n)?;
            hv.define(&rescue_xml)?;
            hv.start(&n)
        })
        .await?;
        info!(instance = %id, image = %image.id, "rescue domain started");
        Ok(())
    }

    pub(super) async fn unrescue(&self, id: Uuid) -> Result<(), ActionError> {
        let name = self.cfg.naming.domain(&id);
        let dir = self.instance_dir(&id);
        let saved = dir.join(SAVED_XML);
        let rescue_disk = dir.join(RESCUE_DISK);
        let original = match tokio::fs::read_to_string(&saved).await {
            Ok(x) => Some(x),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ActionError::Files(e)),
        };
        let n = name.clone();
        let current = self.hv(move |hv| hv.domain_config_xml(&n)).await?;
        match original {
            Some(original) if is_rescue(&current, &rescue_disk) => {
                let n = name.clone();
                self.hv(move |hv| {
                    if hv.state(&n)?.is_some_and(DomainState::is_active) {
                        hv.destroy(&n)?;
                    }
                    hv.discard_save(&n)?;
                    hv.define(&original)?;
                    hv.start(&n)
                })
                .await?;
            }
            // The original definition is back already (a repeat): make sure it runs.
            _ => {
                let n = name.clone();
                if !self.hv(move |hv| hv.state(&n)).await?.is_some_and(DomainState::is_active) {
                    self.start_fresh(&name).await?;
                }
            }
        }
        remove_file(&rescue_disk).await?;
        remove_file(&saved).await?;
        info!(instance = %id, "unrescued");
        Ok(())
    }

    /// Starts a defined domain that is not running.
    async fn start_fresh(&self, name: &str) -> Result<(), ActionError> {
        let n = name.to_string();
        self.hv(move |hv| {
            hv.discard_save(&n)?;
            hv.start(&n)
        })
        .await
    }
}

async fn remove_file(path: &Path) -> Result<(), ActionError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ActionError::Files(e)),
    }
}

/// Writes a file whole and syncs it (a temporary file renamed into place).
async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ActionError> {
    let (path, bytes): (PathBuf, Vec<u8>) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(|_| ActionError::Panicked)?
    .map_err(ActionError::Files)
}

/// Whether a definition is a rescue one (it boots `rescue_disk`).
fn is_rescue(domain_xml: &str, rescue_disk: &Path) -> bool {
    let want = rescue_disk.to_string_lossy();
    xml::disks(domain_xml).iter().any(|(_, src)| *src == want)
}

/// The `<disk>` elements of a definition as (target dev, source, element text, device kind).
fn disk_elements(domain_xml: &str) -> Vec<(String, String, String)> {
    let Ok(doc) = roxmltree::Document::parse(domain_xml) else { return Vec::new() };
    doc.descendants()
        .filter(|n| n.has_tag_name("disk"))
        .filter_map(|d| {
            let dev = d.children().find(|c| c.has_tag_name("target"))?.attribute("dev")?.to_string();
            let source = d
                .children()
                .find(|c| c.has_tag_name("source"))
                .and_then(|s| s.attribute("file").or(s.attribute("name")).or(s.attribute("dev")))
                .unwrap_or_default()
                .to_string();
            Some((dev, source, domain_xml[d.range()].to_string()))
        })
        .collect()
}

/// The `<disk>` elements of the volumes in a definition: every disk whose source is not one
/// of the instance's own files (root disk, config drive, rescue disk).
pub(crate) fn volume_disks(domain_xml: &str, instance_dir: &Path) -> Vec<String> {
    let own = instance_dir.to_string_lossy();
    disk_elements(domain_xml)
        .into_iter()
        .filter(|(_, src, _)| !src.is_empty() && !src.starts_with(own.as_ref()))
        // The new definition places them afresh.
        .map(|(_, _, text)| strip_element(&strip_element(&text, "address"), "alias"))
        .collect()
}

/// The device after `dev` on the same bus (`vda` → `vdb`).
fn next_dev(dev: &str) -> String {
    let mut chars: Vec<char> = dev.chars().collect();
    if let Some(last) = chars.last_mut()
        && last.is_ascii_lowercase()
        && *last != 'z'
    {
        *last = char::from(*last as u8 + 1);
    }
    chars.into_iter().collect()
}

/// `text` without its empty `<name …/>` elements.
fn strip_element(text: &str, name: &str) -> String {
    let mut out = text.to_string();
    let open = format!("<{name} ");
    while let Some(start) = out.find(&open) {
        let Some(len) = out[start..].find("/>") else { break };
        out.replace_range(start..start + len + 2, "");
    }
    out
}

/// The rescue definition made from the instance's own: every disk removed, then the rescue
/// disk where the root disk was (same bus and target) and the root disk as the next device.
/// `None` when the definition has no root disk at `root`.
pub(crate) fn rescue_domain_xml(original: &str, root: &Path, rescue_disk: &Path) -> Option<String> {
    let root_src = root.to_string_lossy();
    let disks = disk_elements(original);
    let (root_dev, _, root_text) = disks.iter().find(|(_, src, _)| *src == root_src)?.clone();
    // libvirt gives each device a PCI slot (and an alias) in the definition: both copies must
    // get their own, so the copies carry none.
    let root_text = strip_element(&strip_element(&root_text, "address"), "alias");
    let esc_root = xml::esc(&root_src);
    let rescue_text = root_text.replace(&esc_root, &xml::esc(&rescue_disk.to_string_lossy()));
    let second = next_dev(&root_dev);
    let moved_root = root_text
        .replace(&format!("dev='{root_dev}'"), &format!("dev='{second}'"))
        .replace(&format!("dev=\"{root_dev}\""), &format!("dev=\"{second}\""));
    // Cut every disk out (from the end, so earlier ranges stay valid).
    let doc = roxmltree::Document::parse(original).ok()?;
    let mut ranges: Vec<std::ops::Range<usize>> =
        doc.descendants().filter(|n| n.has_tag_name("disk")).map(|d| d.range()).collect();
    ranges.sort_by_key(|r| std::cmp::Reverse(r.start));
    let mut x = original.to_string();
    for r in ranges {
        x.replace_range(r, "");
    }
    let close = x.rfind("</devices>")?;
    x.insert_str(close, &format!("  {rescue_text}\n    {moved_root}\n  "));
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='test'><name>meridian-x</name><devices>\
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/s/i/disk'/><target dev='vda' bus='virtio'/><alias name='virtio-disk0'/><address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></disk>\
        <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/s/i/disk.config'/><target dev='vdb' bus='virtio'/><readonly/></disk>\
        <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/s/volumes/v1'/><target dev='vdc' bus='virtio'/></disk>\
        <interface type='network'><mac address='fa:16:3e:00:00:01'/></interface></devices></domain>";

    #[test]
    fn rescue_boots_the_rescue_disk_first_and_keeps_the_root_second() {
        let x = rescue_domain_xml(XML, Path::new("/s/i/disk"), Path::new("/s/i/disk.rescue")).expect("rescue xml");
        assert_eq!(
            xml::disks(&x),
            vec![("vda".to_string(), "/s/i/disk.rescue".to_string()), ("vdb".to_string(), "/s/i/disk".to_string())]
        );
        assert!(x.contains("fa:16:3e:00:00:01"), "NICs kept: {x}");
        assert!(!x.contains("slot='0x04'") && !x.contains("virtio-disk0"), "no PCI slot used twice: {x}");
        assert!(rescue_domain_xml(XML, Path::new("/elsewhere"), Path::new("/r")).is_none());
    }

    #[test]
    fn volumes_are_the_disks_outside_the_instance_dir() {
        let v = volume_disks(XML, Path::new("/s/i"));
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("/s/volumes/v1") && v[0].contains("vdc"), "{v:?}");
    }
}
