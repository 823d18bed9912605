//! Server settings, layered: built-in defaults → optional TOML file → `MERIDIAN_*` environment
//! variables → command-line flags (clap folds the last two together: a flag beats its variable).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Default listen address: Nova's API port, on loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8774";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything `serve` and `admin` need, fully resolved.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// Base URL advertised in the catalog, without a trailing slash.
    pub public_url: String,
    pub token_lifetime_secs: i64,
    pub log_format: LogFormat,
    /// Password given to the bootstrap `admin` user; generated when absent.
    pub admin_password: Option<String>,
    /// Join token compute agents present; generated when absent.
    pub agent_token: Option<String>,
    /// Largest accepted image upload, in bytes (413 beyond).
    pub image_size_cap: u64,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .field("log_format", &self.log_format)
            .field("admin_password", &redacted(&self.admin_password))
            .field("agent_token", &redacted(&self.agent_token))
            .field("image_size_cap", &self.image_size_cap)
            .finish()
    }
}

/// Hides the password part of `scheme://user:password@host/db`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:<redacted>{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Settings as they may appear in the TOML file (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub token_lifetime_secs: Option<i64>,
    pub log_format: Option<LogFormat>,
    pub admin_password: Option<String>,
    pub agent_token: Option<String>,
    pub image_size_cap: Option<u64>,
}

/// Flags shared by every subcommand; each also reads its `MERIDIAN_*` variable.
#[derive(Debug, Default, clap::Args)]
pub struct CommonArgs {
    /// TOML settings file.
    #[arg(long, env = "MERIDIAN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "MERIDIAN_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database, images and generated secrets.
    #[arg(long, env = "MERIDIAN_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://...`; default: a SQLite file in the data dir.
    #[arg(long, env = "MERIDIAN_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Base URL the catalog advertises (default: http://LISTEN).
    #[arg(long, env = "MERIDIAN_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Token lifetime in seconds (default 3600).
    #[arg(long, env = "MERIDIAN_TOKEN_LIFETIME", global = true)]
    pub token_lifetime: Option<i64>,
    /// Log format.
    #[arg(long, env = "MERIDIAN_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Password for the bootstrap admin user (first start only).
    #[arg(
        long,
        env = "MERIDIAN_ADMIN_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub admin_password: Option<String>,
    /// Join token for compute agents (first start only).
    #[arg(
        long,
        env = "MERIDIAN_AGENT_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub agent_token: Option<String>,
    /// Largest accepted image upload in bytes (default 64 GiB).
    #[arg(long, env = "MERIDIAN_IMAGE_SIZE_CAP", global = true)]
    pub image_size_cap: Option<u64>,
}

impl CommonArgs {
    /// Resolves the layers into one [`Config`].
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let listen = match self.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let database_url = self
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("meridian.db").display()));
        let public_url = self
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        let token_lifetime_secs = self
            .token_lifetime
            .or(file.token_lifetime_secs)
            .unwrap_or(3600);
        anyhow::ensure!(token_lifetime_secs > 0, "token lifetime must be positive");
        Ok(Config {
            listen,
            data_dir,
            database_url,
            public_url,
            token_lifetime_secs,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            admin_password: self.admin_password.clone().or(file.admin_password),
            agent_token: self.agent_token.clone().or(file.agent_token),
            image_size_cap: self
                .image_size_cap
                .or(file.image_size_cap)
                .unwrap_or(64 << 30),
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/meridian"),
        None => PathBuf::from("/var/lib/meridian"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ntoken_lifetime_secs = 60\npublic_url = \"http://x/\"\n",
        )
        .expect("write");
        let args = CommonArgs {
            config: Some(path),
            token_lifetime: Some(120),
            ..Default::default()
        };
        let cfg = args.resolve().expect("resolve");
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.token_lifetime_secs, 120);
        assert_eq!(cfg.public_url, "http://x");
        assert!(cfg.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let args = CommonArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(args.resolve().is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let args = CommonArgs {
            admin_password: Some("hunter2".into()),
            database_url: Some("postgres://u:pw@h/db".into()),
            ..Default::default()
        };
        let text = format!("{:?}", args.resolve().expect("resolve"));
        assert!(
            !text.contains("hunter2") && !text.contains(":pw@"),
            "{text}"
        );
    }
}
