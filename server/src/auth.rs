//! Authentication and policy: the token → user/project/roles extractor every API uses, password
//! hashing, and the policy helpers (member writes its project, reader reads, admin does all).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::identity::{Domain, Project, Role, Scope, Token, TokenContext, User};
use crate::store::parse_time;

/// An authenticated request: who, in which project, with which (effective) roles.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub token: Token,
    pub user: User,
    pub user_domain: Domain,
    pub project: Option<(Project, Domain)>,
    /// The domain of a domain-scoped token.
    pub domain: Option<Domain>,
    /// A system-scoped token (`scope.system.all`).
    pub system: bool,
    pub roles: Vec<Role>,
    /// This request's id (`req-<uuid>`), what instance actions record.
    pub request_id: String,
}

impl Ctx {
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.name == name)
    }
    /// Cloud admin: admin on a project (Keystone's legacy `admin_required`) or on the system.
    /// A domain admin is not: that role reaches only its domain.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin") && (self.project.is_some() || self.system)
    }
    /// The project a service request acts in; service APIs need a project-scoped token.
    pub fn project_id(&self) -> ApiResult<&str> {
        match &self.project {
            Some((p, _)) => Ok(&p.id),
            None => Err(ApiError::forbidden("A project-scoped token is required for this request.")),
        }
    }
    /// Reading: any role on the project (reader, member or admin).
    pub fn require_reader(&self, action: &str) -> ApiResult<()> {
        if self.is_admin() || self.has_role("reader") || self.has_role("member") {
            Ok(())
        } else {
            Err(ApiError::policy(action))
        }
    }
    /// Changing the project's own resources: member or admin.
    pub fn require_member(&self, action: &str) -> ApiResult<()> {
        if self.is_admin() || self.has_role("member") { Ok(()) } else { Err(ApiError::policy(action)) }
    }
    pub fn require_admin(&self, action: &str) -> ApiResult<()> {
        if self.is_admin() { Ok(()) } else { Err(ApiError::policy(action)) }
    }
    /// Whether this caller may see a resource owned by `owner` (admins see all).
    pub fn owns(&self, owner: &str) -> bool {
        self.is_admin() || self.project.as_ref().is_some_and(|(p, _)| p.id == owner)
    }
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("The request you have made requires authentication."))?;
        let mut ctx = validate(state, token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("The request you have made requires authentication."))?;
        ctx.request_id = crate::request_id::of(parts);
        Ok(ctx)
    }
}

/// Tokens validated recently, so a request whose token was seen moments ago costs no identity
/// queries (keystonemiddleware caches validated tokens in every OpenStack service the same
/// way). Any identity change made through this process's API empties it at once
/// ([`ValidationCache::invalidate`]); changes made elsewhere (another replica, the admin CLI)
/// are seen within [`ValidationCache::TTL`]. Expiry is checked on every use.
pub type TokenCache = ValidationCache<Ctx>;

/// Secrets (tokens, agents' host credentials) validated in the last [`Self::TTL`], keyed by
/// their hash, with what they resolved to.
pub struct ValidationCache<V> {
    /// Bumped by every invalidation: an entry counts only if it was validated in the current
    /// generation, so a validation that raced with a change is never cached.
    generation: std::sync::atomic::AtomicU64,
    entries: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64, V)>>,
}

impl<V> Default for ValidationCache<V> {
    fn default() -> Self {
        Self { generation: std::sync::atomic::AtomicU64::new(0), entries: std::sync::Mutex::default() }
    }
}

impl<V: Clone> ValidationCache<V> {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(5);
    /// More distinct secrets than this within a TTL empties the cache rather than growing it.
    const MAX_ENTRIES: usize = 10_000;

    /// Read before validating; [`Self::put`] caches the result only if nothing was invalidated
    /// in between.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn get(&self, hash: &str) -> Option<V> {
        let generation = self.generation();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (at, g, value) = entries.get(hash)?;
        (*g == generation && at.elapsed() < Self::TTL).then(|| value.clone())
    }

    pub(crate) fn put(&self, hash: &str, generation: u64, value: &V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if generation != self.generation() {
            return;
        }
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash.to_string(), (std::time::Instant::now(), generation, value.clone()));
    }

    /// Forgets everything validated (after a change that may affect it is committed).
    pub fn invalidate(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.clear();
    }
}

/// Resolves a token id into a [`Ctx`]; `None` when unknown, revoked, expired, or its user or
/// project is disabled or gone.
pub async fn validate(state: &AppState, token_id: &str) -> ApiResult<Option<Ctx>> {
    // The cache is keyed like the table, by the token's hash.
    let key = crate::store::identity::token_hash(token_id);
    if let Some(ctx) = state.tokens.get(&key)
        && parse_time(&ctx.token.expires_at).is_some_and(|t| t > chrono::Utc::now())
    {
        return Ok(Some(ctx));
    }
    let generation = state.tokens.generation();
    let ctx = validate_in_store(state, token_id).await?;
    if let Some(ctx) = &ctx {
        state.tokens.put(&key, generation, ctx);
    }
    Ok(ctx)
}

async fn validate_in_store(state: &AppState, token_id: &str) -> ApiResult<Option<Ctx>> {
    let Some(found) = state.store.token_context(token_id).await? else {
        return Ok(None);
    };
    let TokenContext { token, user, user_domain, project, domain } = found;
    let expired = parse_time(&token.expires_at).is_none_or(|t| t <= chrono::Utc::now());
    if token.revoked != 0 || expired || user.enabled == 0 {
        return Ok(None);
    }
    let scope = match (&token.project_id, &project, &token.domain_id, &domain) {
        (None, _, None, _) if token.system_scope != 0 => Some(Scope::System),
        (None, _, None, _) => None,
        // Scoped to a project or domain that is gone or disabled.
        (Some(pid), Some((p, _)), _, _) if p.enabled != 0 => Some(Scope::Project(pid.clone())),
        (None, _, Some(did), Some(d)) if d.enabled != 0 => Some(Scope::Domain(did.clone())),
        _ => return Ok(None),
    };
    let roles = match &scope {
        None => Vec::new(),
        Some(scope) => {
            let mut roles = state.store.effective_roles(&user.id, scope).await?;
            if let Some(app_cred) = &token.app_cred_id {
                match crate::identity::app_creds::delegated_roles(state, app_cred, roles).await? {
                    Some(delegated) => roles = delegated,
                    // The credential was deleted or has expired.
                    None => return Ok(None),
                }
            }
            if roles.is_empty() {
                // The user lost every role on the scope since the token was issued.
                return Ok(None);
            }
            roles
        }
    };
    let system = scope == Some(Scope::System);
    Ok(Some(Ctx { token, user, user_domain, project, domain, system, roles, request_id: String::new() }))
}

/// Hashes a password with argon2id (off the async executor: it is deliberately slow). The API
/// goes through [`crate::limits::HashPool`] instead, which bounds how many run at once.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_password_blocking(&password)).await?
}

/// Checks a password against a stored argon2 hash (unbounded: see [`hash_password`]).
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password_blocking(&password, &hash)).await.unwrap_or(false)
}

/// [`hash_password`] on the calling thread.
pub fn hash_password_blocking(password: &str) -> anyhow::Result<String> {
    with_hash_memory(|mem| hash_password_in(password, mem))
}

/// [`verify_password`] on the calling thread.
pub fn verify_password_blocking(password: &str, hash: &str) -> bool {
    with_hash_memory(|mem| verify_password_in(password, hash, mem))
}

/// argon2's working memory (19 MiB with the default parameters), reused (see
/// [`with_hash_memory`]): allocating and freeing 19 MiB per login made the allocator hold on to
/// freed blocks, and the server's memory grew with the login rate instead of the pool size.
#[derive(Default)]
pub struct HashMemory(Vec<argon2::Block>);

/// Working memory of hashes that have finished, for the next ones: one buffer per hash that
/// ever ran at the same time as others, whoever ran it (the hashing pool's slots, the bootstrap's
/// admin password, the admin commands). A buffer freed outside this set stayed resident in the
/// allocator next to the pool's own and was the server's peak memory (bench-logins: the
/// bootstrap's hash left 19 MiB beside the pool's two buffers).
static SPARE_MEMORY: std::sync::Mutex<Vec<HashMemory>> = std::sync::Mutex::new(Vec::new());

/// Runs `f` with a spare [`HashMemory`] (a new one when none is spare) and keeps it for the next
/// hash.
pub fn with_hash_memory<T>(f: impl FnOnce(&mut HashMemory) -> T) -> T {
    let spares = || SPARE_MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let mut mem = spares().pop().unwrap_or_default();
    let out = f(&mut mem);
    mem.trim();
    spares().push(mem);
    out
}

/// The spare buffers' sizes, in blocks (tests).
#[cfg(test)]
pub(crate) fn spare_memory() -> Vec<usize> {
    SPARE_MEMORY.lock().unwrap_or_else(|p| p.into_inner()).iter().map(HashMemory::len).collect()
}

impl HashMemory {
    /// The first `blocks` blocks, growing the buffer when a hash needs more. Its content need
    /// not be cleared: argon2 overwrites every block before it reads it.
    fn blocks(&mut self, blocks: usize) -> &mut [argon2::Block] {
        if self.0.len() < blocks {
            self.0.resize(blocks, argon2::Block::default());
        }
        &mut self.0[..blocks]
    }

    /// Blocks held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Gives memory beyond what the default parameters need back (a hash stored with a larger
    /// memory cost, from an import, should not pin that much for good).
    pub fn trim(&mut self) {
        let default = argon2::Params::default().block_count();
        if self.0.len() > default {
            self.0.truncate(default);
            self.0.shrink_to_fit();
        }
    }
}

/// argon2id with the default parameters, in `mem`: the PHC string stored for a password.
pub fn hash_password_in(password: &str, mem: &mut HashMemory) -> anyhow::Result<String> {
    use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString, rand_core::OsRng};
    use argon2::{Algorithm, Argon2, Params, Version};
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let hash = Output::init_with(len, |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, mem.blocks(params.block_count()))
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow::anyhow!("hash parameters: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored PHC string `hash`, computed in `mem` with the hash's
/// own algorithm, version and parameters. Unreadable hashes never match.
pub fn verify_password_in(password: &str, hash: &str, mem: &mut HashMemory) -> bool {
    use argon2::password_hash::{Output, PasswordHash};
    use argon2::{Algorithm, Argon2, Params, Version};
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = parsed.version.map(Version::try_from).transpose().ok()?.unwrap_or_default();
        let params = Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut salt_buf = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
        let argon = Argon2::new(algorithm, version, params.clone());
        let computed = Output::init_with(expected.len(), |out| {
            argon
                .hash_password_into_with_memory(password.as_bytes(), salt, out, mem.blocks(params.block_count()))
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
        .ok()?;
        // `Output`'s equality is constant-time.
        Some(computed == expected)
    };
    check().unwrap_or(false)
}

/// A random secret: 32 bytes, URL-safe base64 (tokens, generated passwords).
pub fn random_secret() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_hash_round_trip() {
        let hash = hash_password("s3cret".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("s3cret".into(), hash.clone()).await);
        assert!(!verify_password("wrong".into(), hash).await);
    }

    #[test]
    fn hashes_agree_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
        let mut mem = HashMemory::default();
        // Ours verifies with the crate's own verifier, and a hash made by the crate (the form
        // every stored password has) verifies with ours, reusing one buffer throughout.
        let ours = hash_password_in("s3cret", &mut mem).expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC string");
        assert!(argon2::Argon2::default().verify_password(b"s3cret", &parsed).is_ok());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2::Argon2::default().hash_password(b"pw", &salt).expect("hash").to_string();
        assert!(verify_password_in("pw", &theirs, &mut mem));
        assert!(!verify_password_in("pW", &theirs, &mut mem));
        assert!(verify_password_in("s3cret", &ours, &mut mem));
        // Other parameters (a smaller memory cost, argon2i) are read from the hash itself.
        let params = argon2::Params::new(1024, 2, 1, None).expect("params");
        let small = argon2::Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_password_in("pw", &small, &mut mem));
        assert!(!verify_password_in("px", &small, &mut mem));
        assert!(!verify_password_in("pw", "$argon2id$garbage", &mut mem));
        assert!(!verify_password_in("pw", "", &mut mem));
    }
}
