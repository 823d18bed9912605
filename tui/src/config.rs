//! Where credentials and settings come from: `clouds.yaml` merged with `secure.yaml` on the
//! standard search path, `OS_*` variables, the user's `config.toml`, and the state file that
//! remembers the last cloud and project (never a password).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use meridian_common::{AppCredential, Credentials};
use serde::{Deserialize, Serialize};
use serde_norway::Value as Yaml;

/// How to log in to one cloud. `password: None` means the login form must ask for it.
#[derive(Clone, Default, PartialEq)]
pub struct Profile {
    /// The clouds.yaml name, or `OS_*` / `form` for the other sources.
    pub name: String,
    pub auth_url: String,
    pub username: String,
    pub password: Option<String>,
    pub project_name: String,
    pub user_domain: String,
    pub project_domain: String,
    pub region: Option<String>,
    /// `auth_type: v3applicationcredential`: the credential's id or name (with `username`),
    /// and its secret; the project is the credential's.
    pub app_cred_id: Option<String>,
    pub app_cred_name: Option<String>,
    pub app_cred_secret: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("project_name", &self.project_name)
            .field("user_domain", &self.user_domain)
            .field("project_domain", &self.project_domain)
            .field("region", &self.region)
            .field("app_cred_id", &self.app_cred_id)
            .field("app_cred_name", &self.app_cred_name)
            .field("app_cred_secret", &self.app_cred_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Profile {
    /// Credentials for the client, when the profile is complete.
    pub fn credentials(&self) -> Option<Credentials> {
        if self.auth_url.is_empty() {
            return None;
        }
        if let Some(secret) = &self.app_cred_secret {
            // By id alone, or by name with the owner's user name.
            if self.app_cred_id.is_none() && (self.app_cred_name.is_none() || self.username.is_empty()) {
                return None;
            }
            return Some(Credentials {
                auth_url: self.auth_url.clone(),
                username: self.username.clone(),
                password: String::new(),
                project_name: self.project_name.clone(),
                user_domain: self.user_domain.clone(),
                project_domain: self.project_domain.clone(),
                app_cred: Some(AppCredential {
                    id: self.app_cred_id.clone(),
                    name: self.app_cred_name.clone(),
                    secret: secret.clone(),
                }),
            });
        }
        let password = self.password.clone()?;
        if self.username.is_empty() {
            return None;
        }
        Some(Credentials {
            auth_url: self.auth_url.clone(),
            username: self.username.clone(),
            password,
            project_name: self.project_name.clone(),
            user_domain: self.user_domain.clone(),
            project_domain: self.project_domain.clone(),
            app_cred: None,
        })
    }
}

/// The environment as a lookup, so tests can pass their own.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// The `openstack` CLI's search path for `name` (`clouds.yaml` / `secure.yaml`): the current
/// directory, the user's config dir, `/etc/openstack`. The first file found wins.
pub fn search_path(name: &str, cwd: &Path, env: &dyn Env) -> Vec<PathBuf> {
    let mut dirs = vec![cwd.to_path_buf()];
    let config_home = env
        .var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env.var("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(c) = config_home {
        dirs.push(c.join("openstack"));
    }
    dirs.push(PathBuf::from("/etc/openstack"));
    dirs.into_iter().map(|d| d.join(name)).collect()
}

fn first_file(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned()
}

/// Recursively merges `over` into `base` (secure.yaml's values win, as in openstacksdk).
fn merge(base: &mut Yaml, over: Yaml) {
    match (base, over) {
        (Yaml::Mapping(b), Yaml::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// All clouds from clouds.yaml (+ secure.yaml), by name.
pub fn load_clouds(cwd: &Path, env: &dyn Env) -> anyhow::Result<BTreeMap<String, Profile>> {
    let clouds_file = env
        .var("OS_CLIENT_CONFIG_FILE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| first_file(&search_path("clouds.yaml", cwd, env)));
    let Some(clouds_file) = clouds_file else {
        return Ok(BTreeMap::new());
    };
    let text = std::fs::read_to_string(&clouds_file).with_context(|| format!("reading {}", clouds_file.display()))?;
    let mut doc: Yaml = serde_norway::from_str(&text).with_context(|| format!("parsing {}", clouds_file.display()))?;
    let secure_file = env
        .var("OS_CLIENT_SECURE_FILE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| first_file(&search_path("secure.yaml", cwd, env)));
    if let Some(secure_file) = secure_file {
        let text =
            std::fs::read_to_string(&secure_file).with_context(|| format!("reading {}", secure_file.display()))?;
        let secure: Yaml =
            serde_norway::from_str(&text).with_context(|| format!("parsing {}", secure_file.display()))?;
        merge(&mut doc, secure);
    }
    let mut out = BTreeMap::new();
    if let Some(clouds) = doc.get("clouds").and_then(Yaml::as_mapping) {
        for (name, cloud) in clouds {
            let Some(name) = name.as_str() else { continue };
            out.insert(name.to_string(), profile_from_yaml(name, cloud));
        }
    }
    Ok(out)
}

fn profile_from_yaml(name: &str, cloud: &Yaml) -> Profile {
    let auth = cloud.get("auth");
    let s = |k: &str| auth.and_then(|a| a.get(k)).and_then(Yaml::as_str).map(str::to_string);
    let domain = s("domain_name");
    let app_cred = cloud.get("auth_type").and_then(Yaml::as_str) == Some("v3applicationcredential");
    Profile {
        name: name.to_string(),
        auth_url: s("auth_url").unwrap_or_default(),
        username: s("username").unwrap_or_default(),
        password: s("password"),
        project_name: s("project_name").or_else(|| s("tenant_name")).unwrap_or_default(),
        user_domain: s("user_domain_name").or_else(|| domain.clone()).unwrap_or_else(|| "Default".into()),
        project_domain: s("project_domain_name").or(domain).unwrap_or_else(|| "Default".into()),
        region: cloud.get("region_name").and_then(Yaml::as_str).map(str::to_string),
        app_cred_id: app_cred.then(|| s("application_credential_id")).flatten(),
        app_cred_name: app_cred.then(|| s("application_credential_name")).flatten(),
        app_cred_secret: app_cred.then(|| s("application_credential_secret")).flatten(),
    }
}

/// A profile from `OS_*` variables (an openrc file), when `OS_AUTH_URL` is set.
pub fn profile_from_env(env: &dyn Env) -> Option<Profile> {
    let auth_url = env.var("OS_AUTH_URL")?;
    let domain = env.var("OS_DOMAIN_NAME");
    let app_cred = env.var("OS_AUTH_TYPE").as_deref() == Some("v3applicationcredential");
    Some(Profile {
        name: "OS_*".into(),
        auth_url,
        username: env.var("OS_USERNAME").unwrap_or_default(),
        password: env.var("OS_PASSWORD"),
        project_name: env.var("OS_PROJECT_NAME").or_else(|| env.var("OS_TENANT_NAME")).unwrap_or_default(),
        user_domain: env.var("OS_USER_DOMAIN_NAME").or_else(|| domain.clone()).unwrap_or_else(|| "Default".into()),
        project_domain: env.var("OS_PROJECT_DOMAIN_NAME").or(domain).unwrap_or_else(|| "Default".into()),
        region: env.var("OS_REGION_NAME"),
        app_cred_id: app_cred.then(|| env.var("OS_APPLICATION_CREDENTIAL_ID")).flatten(),
        app_cred_name: app_cred.then(|| env.var("OS_APPLICATION_CREDENTIAL_NAME")).flatten(),
        app_cred_secret: app_cred.then(|| env.var("OS_APPLICATION_CREDENTIAL_SECRET")).flatten(),
    })
}

/// What to do at start.
#[derive(Debug, PartialEq)]
pub enum Start {
    /// Log in with this profile (the form asks for anything missing).
    Login(Box<Profile>),
    /// Several clouds and no choice made: show the picker (the remembered one first).
    Pick(Vec<Profile>),
    /// Nothing configured: an empty login form.
    Form,
}

/// Decides how to start: `--os-cloud`/`OS_CLOUD` pick a cloud (with `OS_PASSWORD` filling a missing
/// password), then `OS_*` variables, then clouds.yaml (one cloud → it; several → picker).
pub fn resolve_start(
    os_cloud: Option<&str>,
    clouds: &BTreeMap<String, Profile>,
    env: &dyn Env,
    state: &State,
) -> anyhow::Result<Start> {
    let remembered_project = |p: &mut Profile| {
        if let Some(project) = state.projects.get(&p.name) {
            p.project_name = project.clone();
        }
    };
    if let Some(name) = os_cloud.map(str::to_string).or_else(|| env.var("OS_CLOUD")) {
        let mut p = clouds.get(&name).cloned().with_context(|| format!("no cloud named {name} in clouds.yaml"))?;
        if p.password.is_none() {
            p.password = env.var("OS_PASSWORD");
        }
        return Ok(Start::Login(Box::new(p)));
    }
    if let Some(p) = profile_from_env(env) {
        return Ok(Start::Login(Box::new(p)));
    }
    match clouds.len() {
        0 => Ok(Start::Form),
        1 => {
            let mut p = clouds.values().next().cloned().context("one cloud")?;
            remembered_project(&mut p);
            Ok(Start::Login(Box::new(p)))
        }
        _ => {
            let mut list: Vec<Profile> = clouds.values().cloned().collect();
            list.iter_mut().for_each(remembered_project);
            if let Some(last) = &state.last_cloud
                && let Some(i) = list.iter().position(|p| &p.name == last)
            {
                let p = list.remove(i);
                list.insert(0, p);
            }
            Ok(Start::Pick(list))
        }
    }
}

/// What the dashboard remembers between runs. Never holds a password.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct State {
    pub last_cloud: Option<String>,
    /// Last project per cloud name.
    #[serde(default)]
    pub projects: BTreeMap<String, String>,
    /// The login form's last auth URL and user (a convenience; no secret).
    pub last_auth_url: Option<String>,
    pub last_username: Option<String>,
    pub theme: Option<String>,
}

impl State {
    pub fn load(path: &Path) -> State {
        std::fs::read_to_string(path).ok().and_then(|t| toml::from_str(&t).ok()).unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, toml::to_string(self)?)?;
        Ok(())
    }
}

/// The user's settings file (`config.toml` in the config dir).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub theme: Option<String>,
    /// Action name → key or keys (`"ctrl-d"`, `["x", "delete"]`).
    #[serde(default)]
    pub keys: BTreeMap<String, KeySpec>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum KeySpec {
    One(String),
    Many(Vec<String>),
}

impl KeySpec {
    pub fn keys(&self) -> Vec<&str> {
        match self {
            KeySpec::One(k) => vec![k.as_str()],
            KeySpec::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl Settings {
    pub fn load(path: &Path) -> anyhow::Result<Settings> {
        match std::fs::read_to_string(path) {
            Ok(t) => toml::from_str(&t).with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Config and state directories (`MERIDIAN_CONFIG_DIR` / `MERIDIAN_STATE_DIR` override them).
pub struct Dirs {
    pub config: PathBuf,
    pub state: PathBuf,
}

impl Dirs {
    pub fn discover(env: &dyn Env) -> Dirs {
        let pd = directories::ProjectDirs::from("", "", "meridian");
        let config = env
            .var("MERIDIAN_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| pd.as_ref().map(|p| p.config_dir().to_path_buf()))
            .unwrap_or_else(|| PathBuf::from(".meridian"));
        let state = env
            .var("MERIDIAN_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| pd.as_ref().map(|p| p.state_dir().unwrap_or(p.data_local_dir()).to_path_buf()))
            .unwrap_or_else(|| config.clone());
        Dirs { config, state }
    }
    pub fn state_file(&self) -> PathBuf {
        self.state.join("state.toml")
    }
    pub fn settings_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }
    pub fn log_file(&self) -> PathBuf {
        self.state.join("meridian.log")
    }
    pub fn themes_dir(&self) -> PathBuf {
        self.config.join("themes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const CLOUDS: &str = r#"
clouds:
  dev:
    auth:
      auth_url: http://dev:5000/v3
      username: alice
      project_name: demo
      user_domain_name: Users
    region_name: RegionOne
  prod:
    auth:
      auth_url: https://prod/identity
      username: bob
      password: from-clouds
      project_name: ops
      domain_name: Corp
"#;
    const SECURE: &str = r#"
clouds:
  dev:
    auth:
      password: from-secure
  prod:
    auth:
      password: secure-wins
"#;

    #[test]
    fn debug_never_prints_a_password_or_secret() {
        let p = Profile {
            auth_url: "http://x/identity".into(),
            username: "alice".into(),
            password: Some("pw-s3cret".into()),
            app_cred_id: Some("abc".into()),
            app_cred_secret: Some("ac-s3cret".into()),
            ..Default::default()
        };
        let creds = p.credentials().expect("complete");
        let text = format!("{p:?} {:?} {creds:?}", Start::Login(Box::new(p.clone())));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>") && text.contains("alice"), "{text}");
    }

    #[test]
    fn application_credentials_from_clouds_yaml_and_os_vars() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("clouds.yaml"),
            "clouds:\n  ci:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: http://x/identity\n      application_credential_id: abc\n      application_credential_secret: s3cret\n  named:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: http://x/identity\n      username: carol\n      user_domain_name: Default\n      application_credential_name: ci\n      application_credential_secret: s3cret\n",
        )
        .expect("write");
        let clouds = load_clouds(dir.path(), &env(&[])).expect("load");
        let ci = clouds["ci"].credentials().expect("complete without user or password");
        let a = ci.app_cred.expect("app cred");
        assert_eq!((a.id.as_deref(), a.secret.as_str()), (Some("abc"), "s3cret"));
        assert!(!format!("{:?}", clouds["ci"]).contains("s3cret"), "secret redacted");
        let named = clouds["named"].credentials().expect("by name");
        let a = named.app_cred.expect("app cred");
        assert_eq!((a.name.as_deref(), named.username.as_str()), (Some("ci"), "carol"));
        let e = env(&[
            ("OS_AUTH_URL", "http://x/identity"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_ID", "abc"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
        ]);
        let p = profile_from_env(&e).expect("profile");
        assert_eq!(p.credentials().and_then(|c| c.app_cred).and_then(|a| a.id).as_deref(), Some("abc"));
    }

    #[test]
    fn clouds_yaml_merges_secure_yaml_from_the_current_dir_first() {
        let cwd = tempfile::tempdir().expect("tmp");
        let home = tempfile::tempdir().expect("tmp");
        std::fs::write(cwd.path().join("clouds.yaml"), CLOUDS).expect("write");
        // secure.yaml found further along the path (user config dir) is still merged.
        std::fs::create_dir_all(home.path().join(".config/openstack")).expect("mkdir");
        std::fs::write(home.path().join(".config/openstack/secure.yaml"), SECURE).expect("write");
        // A clouds.yaml in the config dir loses to the current dir's.
        std::fs::write(home.path().join(".config/openstack/clouds.yaml"), "clouds: {other: {}}").expect("write");
        let e = env(&[("HOME", home.path().to_str().expect("utf8"))]);
        let clouds = load_clouds(cwd.path(), &e).expect("load");
        assert_eq!(clouds.keys().collect::<Vec<_>>(), ["dev", "prod"]);
        let dev = &clouds["dev"];
        assert_eq!(dev.password.as_deref(), Some("from-secure"));
        assert_eq!(dev.user_domain, "Users");
        assert_eq!(dev.project_domain, "Default");
        assert_eq!(dev.region.as_deref(), Some("RegionOne"));
        let prod = &clouds["prod"];
        assert_eq!(prod.password.as_deref(), Some("secure-wins"));
        assert_eq!((prod.user_domain.as_str(), prod.project_domain.as_str()), ("Corp", "Corp"));
    }

    #[test]
    fn os_vars_make_a_profile_and_win_over_clouds_yaml_without_os_cloud() {
        let e = env(&[
            ("OS_AUTH_URL", "http://h/identity"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_NAME", "proj"),
            ("OS_USER_DOMAIN_NAME", "D1"),
        ]);
        let mut clouds = BTreeMap::new();
        clouds.insert("a".into(), Profile { name: "a".into(), ..Profile::default() });
        let Start::Login(p) = resolve_start(None, &clouds, &e, &State::default()).expect("start") else {
            panic!("expected a login")
        };
        assert_eq!((p.auth_url.as_str(), p.username.as_str()), ("http://h/identity", "u"));
        assert_eq!(p.project_name, "proj");
        assert_eq!((p.user_domain.as_str(), p.project_domain.as_str()), ("D1", "Default"));
        let creds = p.credentials().expect("complete");
        assert_eq!(creds.password, "p");
    }

    #[test]
    fn os_cloud_picks_a_cloud_and_os_password_fills_its_gap() {
        let cwd = tempfile::tempdir().expect("tmp");
        std::fs::write(cwd.path().join("clouds.yaml"), CLOUDS).expect("write");
        let e = env(&[("OS_CLOUD", "dev"), ("OS_PASSWORD", "typed"), ("HOME", "/nonexistent")]);
        let clouds = load_clouds(cwd.path(), &e).expect("load");
        let Start::Login(p) = resolve_start(None, &clouds, &e, &State::default()).expect("start") else {
            panic!("expected a login")
        };
        assert_eq!(p.name, "dev");
        assert_eq!(p.password.as_deref(), Some("typed"));
        // The flag wins over the variable; an unknown name is an error in words.
        let Start::Login(p) = resolve_start(Some("prod"), &clouds, &e, &State::default()).expect("start") else {
            panic!("expected a login")
        };
        assert_eq!(p.name, "prod");
        let err = resolve_start(Some("nope"), &clouds, &e, &State::default()).expect_err("unknown");
        assert!(err.to_string().contains("no cloud named nope"), "{err}");
    }

    #[test]
    fn several_clouds_mean_a_picker_with_the_remembered_one_first() {
        let cwd = tempfile::tempdir().expect("tmp");
        std::fs::write(cwd.path().join("clouds.yaml"), CLOUDS).expect("write");
        let e = env(&[("HOME", "/nonexistent")]);
        let clouds = load_clouds(cwd.path(), &e).expect("load");
        let mut state = State { last_cloud: Some("prod".into()), ..State::default() };
        state.projects.insert("prod".into(), "remembered".into());
        let Start::Pick(list) = resolve_start(None, &clouds, &e, &state).expect("start") else {
            panic!("expected a picker")
        };
        assert_eq!(list.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["prod", "dev"]);
        assert_eq!(list[0].project_name, "remembered");
        assert_eq!(resolve_start(None, &BTreeMap::new(), &e, &state).expect("start"), Start::Form);
    }

    #[test]
    fn state_round_trips_and_holds_no_password() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub/state.toml");
        let mut s = State { last_cloud: Some("dev".into()), last_username: Some("alice".into()), ..State::default() };
        s.projects.insert("dev".into(), "demo".into());
        s.save(&path).expect("save");
        assert_eq!(State::load(&path), s);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("password"), "{text}");
    }

    #[test]
    fn settings_parse_keys_and_reject_typos() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "theme = \"light\"\n[keys]\ndelete = \"ctrl-x\"\nquit = [\"q\", \"ctrl-q\"]\n")
            .expect("write");
        let s = Settings::load(&path).expect("load");
        assert_eq!(s.theme.as_deref(), Some("light"));
        assert_eq!(s.keys["delete"].keys(), ["ctrl-x"]);
        assert_eq!(s.keys["quit"].keys(), ["q", "ctrl-q"]);
        std::fs::write(&path, "them = \"light\"\n").expect("write");
        assert!(Settings::load(&path).is_err());
        assert_eq!(Settings::load(&dir.path().join("missing.toml")).expect("default"), Settings::default());
    }
}
