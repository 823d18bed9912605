//! `/os-keypairs`: per-user SSH (and x509) key pairs, imported or generated.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};
use x509_cert::der::Decode;

use super::ApiVersion;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::compute::Keypair;

fn summary_json(v: ApiVersion, k: &Keypair) -> Value {
    let mut o = json!({"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint});
    if v.at_least(2) {
        o["type"] = json!(k.kind);
    }
    o
}

fn detail_json(v: ApiVersion, k: &Keypair) -> Value {
    let mut o = summary_json(v, k);
    o["id"] = json!(k.id);
    o["user_id"] = json!(k.user_id);
    o["created_at"] = json!(nova_time(&k.created_at));
    o["updated_at"] = Value::Null;
    o["deleted"] = json!(false);
    o["deleted_at"] = Value::Null;
    o
}

/// Nova prints key pair times without the zone suffix: `2014-05-07T12:06:13.681238`.
fn nova_time(t: &str) -> String {
    t.trim_end_matches('Z').to_string()
}

/// Whose key pairs a request acts on: the caller's, or `user_id` for admins (2.10+).
fn target_user(ctx: &Ctx, v: ApiVersion, requested: Option<&str>) -> ApiResult<String> {
    match requested {
        Some(u) if u != ctx.user.id => {
            if !v.at_least(10) {
                return Ok(ctx.user.id.clone());
            }
            ctx.require_admin("os_compute_api:os-keypairs")?;
            Ok(u.to_string())
        }
        _ => Ok(ctx.user.id.clone()),
    }
}

pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("os_compute_api:os-keypairs:index")?;
    let user = target_user(&ctx, v, q.get("user_id"))?;
    let mut keys = state.store.list_keypairs(&user).await?;
    let page = if v.at_least(35) { super::flavors::paginate(&mut keys, &q, |k| &k.name)? } else { None };
    let list: Vec<Value> = keys.iter().map(|k| json!({"keypair": summary_json(v, k)})).collect();
    let mut out = json!({"keypairs": list});
    if let Some(l) = super::next_links(&state, "os-keypairs", page, keys.len(), keys.last().map(|k| k.name.as_str())) {
        out["keypairs_links"] = l;
    }
    Ok(axum::Json(out))
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(name): Path<String>,
    q: Query,
) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("os_compute_api:os-keypairs:show")?;
    let user = target_user(&ctx, v, q.get("user_id"))?;
    let k = state.store.get_keypair(&user, &name).await?;
    Ok(axum::Json(json!({"keypair": detail_json(v, &k)})))
}

pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(name): Path<String>,
    q: Query,
) -> ApiResult<StatusCode> {
    ctx.require_member("os_compute_api:os-keypairs:delete")?;
    let user = target_user(&ctx, v, q.get("user_id"))?;
    state.store.delete_keypair(&user, &name).await?;
    Ok(if v.at_least(2) { StatusCode::NO_CONTENT } else { StatusCode::ACCEPTED })
}

fn bad(field: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid input for field/attribute {field}. {why}"))
}

/// `POST /os-keypairs`: import `public_key`, or (before 2.92) generate a pair and return the
/// private half once. 200 before 2.2, 201 from 2.2.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    ctx.require_member("os_compute_api:os-keypairs:create")?;
    let b: &Map<String, Value> = body
        .get("keypair")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("keypair", "'keypair' is a required property"))?;
    let name = b.get("name").and_then(Value::as_str).ok_or_else(|| bad("name", "'name' is a required property"))?;
    validate_name(name, v)?;
    let kind = match b.get("type") {
        None => "ssh",
        Some(_) if !v.at_least(2) => {
            return Err(bad("keypair", "Additional properties are not allowed ('type' was unexpected)"));
        }
        Some(Value::String(s)) if s == "ssh" || s == "x509" => s.as_str(),
        Some(other) => {
            return Err(bad("type", &format!("Value: {other}. 'ssh' or 'x509' expected")));
        }
    };
    let requested_user = match b.get("user_id") {
        None => None,
        Some(_) if !v.at_least(10) => {
            return Err(bad("keypair", "Additional properties are not allowed ('user_id' was unexpected)"));
        }
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => return Err(bad("user_id", &format!("Value: {other}."))),
    };
    let user_id = target_user(&ctx, v, requested_user)?;
    if requested_user.is_some() {
        state.store.get_user(&user_id).await.map_err(|_| bad("user_id", "No such user."))?;
    }
    let quota = crate::compute::quotas::limit_for(&state, ctx.project_id()?, "key_pairs").await?;
    if quota >= 0 && state.store.count_keypairs(&user_id).await? >= quota {
        return Err(ApiError::forbidden("Quota exceeded, too many key pairs."));
    }
    let (public_key, private_key, fingerprint) = match b.get("public_key") {
        Some(Value::String(pk)) => {
            let pk = pk.trim().to_string();
            let fp = if kind == "x509" { x509_fingerprint(&pk)? } else { ssh_fingerprint(&pk)? };
            (pk, None, fp)
        }
        Some(other) => return Err(bad("public_key", &format!("Value: {other}."))),
        None if v.at_least(92) => {
            return Err(bad("keypair", "'public_key' is a required property"));
        }
        None if kind == "x509" => {
            // 2048-bit RSA key generation takes a noticeable moment: keep it off the async workers.
            let user = user_id.clone();
            let (certificate, private, fp) =
                tokio::task::spawn_blocking(move || generate_x509(&user)).await.map_err(ApiError::internal)??;
            (certificate, Some(private), fp)
        }
        None => {
            let (public, private) = generate(name)?;
            let fp = ssh_fingerprint(&public)?;
            (public, Some(private), fp)
        }
    };
    let k = Keypair {
        id: state.store.next_counter("keypair").await?,
        user_id,
        name: name.to_string(),
        kind: kind.to_string(),
        public_key,
        fingerprint,
        created_at: crate::store::now(),
    };
    state.store.create_keypair(&k).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => ApiError::conflict(format!("Key pair '{name}' already exists.")),
        other => other.into(),
    })?;
    let mut out = summary_json(v, &k);
    out["user_id"] = json!(k.user_id);
    if let Some(p) = private_key {
        out["private_key"] = json!(p);
    }
    let status = if v.at_least(2) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(json!({"keypair": out}))).into_response())
}

fn validate_name(name: &str, v: ApiVersion) -> ApiResult<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_ ".contains(c) || (v.at_least(92) && "@.".contains(c));
    if name.is_empty() || name.len() > 255 || name.trim() != name || !name.chars().all(allowed) {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute name. Value: {name}. Keypair name contains unsafe characters or is not 1-255 characters"
        )));
    }
    Ok(())
}

/// `xx:xx:…` MD5 of the key blob, as Nova (and `ssh-keygen -E md5`) prints it.
pub fn ssh_fingerprint(public_key: &str) -> ApiResult<String> {
    let invalid = || ApiError::bad_request("Keypair data is invalid: failed to generate fingerprint");
    let mut parts = public_key.split_whitespace();
    let (algo, blob) = (parts.next().ok_or_else(invalid)?, parts.next().ok_or_else(invalid)?);
    let bytes = base64::engine::general_purpose::STANDARD.decode(blob).map_err(|_| invalid())?;
    // The blob starts with the algorithm name as an SSH string; it must match the prefix.
    let len = bytes.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or_else(invalid)?;
    let embedded = bytes.get(4..4 + len).ok_or_else(invalid)?;
    if embedded != algo.as_bytes() {
        return Err(invalid());
    }
    let digest = Md5::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// Nova's `generate_x509_fingerprint`: the PEM must hold an X.509 certificate, whose DER bytes'
/// SHA-1 is printed as colon-separated hex.
fn x509_fingerprint(pem: &str) -> ApiResult<String> {
    let invalid = |why: String| {
        ApiError::bad_request(format!(
            "Keypair data is invalid: failed to generate X509 fingerprint. Error message: {why}"
        ))
    };
    let (label, der) = x509_cert::der::pem::decode_vec(pem.as_bytes())
        .map_err(|e| invalid(format!("Unable to load PEM file: {e}")))?;
    // The labels OpenSSL's certificate loader (used by Nova through `cryptography`) accepts.
    if label != "CERTIFICATE" && label != "X509 CERTIFICATE" {
        return Err(invalid(format!("Unable to load PEM file: unexpected label {label}")));
    }
    x509_cert::Certificate::from_der(&der).map_err(|e| invalid(format!("error parsing asn1 value: {e}")))?;
    Ok(sha1_hex(&der))
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Sha1;
    Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Nova's `generate_winrm_x509_cert`, for WinRM certificate logins to Windows guests: a 2048-bit
/// RSA key and a certificate self-signed with it for ten years, subject `CN=<user id>`, usable for
/// client authentication, naming `<user id>@localhost` as its user principal name.
/// Returns (certificate PEM, private key, fingerprint). As in Nova the private key is the key and
/// certificate bundled as PKCS#12 with an empty password, base64-encoded: what Windows imports.
fn generate_x509(user_id: &str) -> ApiResult<(String, String, String)> {
    use rsa::pkcs8::EncodePrivateKey;
    // Microsoft's User Principal Name otherName (szOID_NT_PRINCIPAL_NAME).
    const UPN_OID: [u64; 10] = [1, 3, 6, 1, 4, 1, 311, 20, 2, 3];

    // ring signs with RSA keys but cannot generate them, hence the `rsa` crate.
    let key = rsa::RsaPrivateKey::new(&mut ssh_key::rand_core::OsRng, 2048).map_err(ApiError::internal)?;
    let pkcs8 = key.to_pkcs8_der().map_err(ApiError::internal)?;
    let signer = rcgen::KeyPair::try_from(pkcs8.as_bytes()).map_err(ApiError::internal)?;

    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, user_id);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(3650);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.subject_alt_names = vec![rcgen::SanType::OtherName((
        UPN_OID.to_vec(),
        rcgen::OtherNameValue::Utf8String(format!("{user_id}@localhost")),
    ))];
    let cert = params.self_signed(&signer).map_err(ApiError::internal)?;
    let cert_der: &[u8] = cert.der();

    // OpenSSL ties the key to its certificate by the certificate's SHA-1 as localKeyID.
    let local_key_id = {
        use sha1::Sha1;
        Sha1::digest(cert_der)
    };
    let chain = vec![p12_keystore::Certificate::from_der(cert_der).map_err(ApiError::internal)?];
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        user_id,
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            pkcs8.as_bytes(),
            local_key_id,
            chain,
        )),
    );
    let pfx = store.writer("").write().map_err(ApiError::internal)?;
    let private_key = base64::engine::general_purpose::STANDARD.encode(pfx);
    Ok((cert.pem(), private_key, sha1_hex(cert_der)))
}

/// A fresh Ed25519 key pair: (OpenSSH public line, OpenSSH PEM private key).
fn generate(comment: &str) -> ApiResult<(String, String)> {
    let mut key = ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .map_err(ApiError::internal)?;
    key.set_comment(format!("Generated-by-Meridian {comment}"));
    let public = key.public_key().to_openssh().map_err(ApiError::internal)?;
    let private = key.to_openssh(ssh_key::LineEnding::LF).map_err(ApiError::internal)?;
    Ok((public, private.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_matching_fingerprints() {
        let (public, private) = generate("k1").expect("generate");
        assert!(public.starts_with("ssh-ed25519 "));
        assert!(private.contains("BEGIN OPENSSH PRIVATE KEY"));
        let fp = ssh_fingerprint(&public).expect("fingerprint");
        assert_eq!(fp.len(), 47);
    }

    #[test]
    fn garbage_public_keys_are_rejected() {
        assert!(ssh_fingerprint("ssh-rsa notbase64!!").is_err());
        assert!(ssh_fingerprint("ssh-rsa").is_err());
        // Valid base64 but the embedded algorithm does not match the prefix.
        let (public, _) = generate("k").expect("generate");
        let blob = public.split_whitespace().nth(1).expect("blob");
        assert!(ssh_fingerprint(&format!("ssh-rsa {blob}")).is_err());
    }
}
