//! Key pairs made in the dashboard, as Horizon makes them: Nova generates the pair (a create
//! without `public_key`, which clouds allow below microversion 2.92) and returns the private key
//! once; a cloud that refuses gets a pair generated here (ed25519, `ssh-key`) and its public half
//! imported. The private key is written once to `<data dir>/keys/<cloud>/<name>` (0600, never
//! over an existing file) and shown once. Importing a public key from a file is the other way.
//!
//! [`create`] runs in the worker (network and files); the form and the once-only view of the
//! private key are overlays (`overlays::key_form`, `overlays::key_created`).

use std::io::Write;
use std::path::{Path, PathBuf};

use meridian_common::{Client, ClientError};
use reqwest::StatusCode;
use serde_json::json;

/// Where the public key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Generate,
    /// A public key file on this machine (`~` expanded).
    ImportFile(String),
}

/// The outcome of a create, for the once-only overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub name: String,
    /// Generated: where the private key was saved (`Err`: why it could not be, the key is then
    /// only in `private_key`).
    pub saved: Option<Result<PathBuf, String>>,
    pub private_key: Option<String>,
    /// "the cloud" or "this dashboard".
    pub generated_by: Option<&'static str>,
}

/// Creates the key pair `name` on the cloud; see the module docs.
pub async fn create(
    client: &Client,
    keys_dir: &Path,
    cloud: &str,
    name: &str,
    source: &KeySource,
) -> Result<Created, ClientError> {
    match source {
        KeySource::ImportFile(file) => {
            let path = expand_home(file);
            let public_key = std::fs::read_to_string(&path)
                .map_err(|e| ClientError::Decode(format!("cannot read {}: {e}", path.display())))?;
            let public_key = public_key.trim().to_string();
            if ssh_key::PublicKey::from_openssh(&public_key).is_err() {
                return Err(ClientError::Decode(format!("{} is not an OpenSSH public key", path.display())));
            }
            client
                .post("compute", "/os-keypairs", &json!({"keypair": {"name": name, "public_key": public_key}}))
                .await?;
            Ok(Created { name: name.into(), saved: None, private_key: None, generated_by: None })
        }
        KeySource::Generate => {
            let dest = crate::ssh::key_path(keys_dir, cloud, name);
            // Checked first so that no key pair is made whose private key could not be kept.
            if dest.exists() {
                return Err(ClientError::Decode(format!(
                    "{} already exists (a key of an earlier key pair {name}); delete it or pick another name",
                    dest.display()
                )));
            }
            let (private_key, by) =
                match client.post("compute", "/os-keypairs", &json!({"keypair": {"name": name}})).await {
                    Ok(v) => match v["keypair"]["private_key"].as_str() {
                        Some(k) => (k.to_string(), "the cloud"),
                        None => return Err(ClientError::Decode("the cloud returned no private key".into())),
                    },
                    // Microversion 2.92 made public_key required: generate here and import.
                    Err(e) if e.status() == Some(StatusCode::BAD_REQUEST) => {
                        let (private, public) = generate_ed25519(name)?;
                        client
                            .post("compute", "/os-keypairs", &json!({"keypair": {"name": name, "public_key": public}}))
                            .await?;
                        (private, "this dashboard")
                    }
                    Err(e) => return Err(e),
                };
            let saved = save_private_key(&dest, &private_key).map(|()| dest).map_err(|e| e.to_string());
            Ok(Created {
                name: name.into(),
                saved: Some(saved),
                private_key: Some(private_key),
                generated_by: Some(by),
            })
        }
    }
}

/// A new ed25519 pair in OpenSSH formats (private, public).
pub fn generate_ed25519(comment: &str) -> Result<(String, String), ClientError> {
    let bad = |e: ssh_key::Error| ClientError::Decode(format!("generating a key: {e}"));
    let mut key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).map_err(bad)?;
    key.set_comment(comment);
    let private = key.to_openssh(ssh_key::LineEnding::LF).map_err(bad)?.to_string();
    let public = key.public_key().to_openssh().map_err(bad)?;
    Ok((private, public))
}

/// Writes the key with mode 0600 into a 0700 directory; an existing file is never replaced.
pub fn save_private_key(dest: &Path, key: &str) -> std::io::Result<()> {
    if let Some(dir) = dest.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(dest)?;
    f.write_all(key.as_bytes())?;
    if !key.ends_with('\n') {
        f.write_all(b"\n")?;
    }
    f.sync_all()
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pairs_are_openssh_ed25519() {
        let (private, public) = generate_ed25519("k1").expect("generate");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{private}");
        assert!(public.starts_with("ssh-ed25519 ") && public.ends_with(" k1"), "{public}");
        let parsed = ssh_key::PrivateKey::from_openssh(&private).expect("parse");
        assert_eq!(parsed.public_key().to_openssh().expect("public"), public);
    }

    #[test]
    fn the_private_key_file_is_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("keys/dev/k1");
        save_private_key(&dest, "secret").expect("save");
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "secret\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dmode = std::fs::metadata(dest.parent().expect("dir")).expect("meta").permissions().mode() & 0o777;
            assert_eq!(dmode, 0o700);
        }
        let again = save_private_key(&dest, "other").expect_err("must not overwrite");
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "secret\n");
    }
}
