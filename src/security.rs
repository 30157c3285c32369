//! Security of the HTTP port (HTTP, SSE, the WebSocket bindings): TLS certificates, who may call
//! (a bearer token or basic credentials), and which Host names may reach it (DNS rebinding).
//! The TLS certificate and key are kept as DER too, for coaps' certificate mode.
//!
//! Every decision is a plain function of request headers, so the HTTP binding applies it in one
//! middleware and tests call it without sockets. The TD's security description comes from the
//! same configuration, so a TD states exactly what is enforced. Secrets are kept only as SHA-256
//! digests, compared in constant time, and never logged.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest::{SHA256, digest};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Equal in time that does not depend on where the inputs differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credentials a client must present.
pub enum Auth {
    /// `Authorization: Bearer TOKEN` (or `?access_token=` / `?jwt=` on a GET).
    Bearer {
        /// The token's SHA-256 digest (the token itself is not kept).
        token: [u8; 32],
    },
    /// `Authorization: Basic` with this user and password.
    Basic {
        /// The user name.
        user: String,
        /// The password's SHA-256 digest.
        password: [u8; 32],
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, not even its digest.
        match self {
            Auth::Bearer { .. } => f.write_str("Auth::Bearer"),
            Auth::Basic { user, .. } => write!(f, "Auth::Basic({user})"),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    Missing,
    Wrong,
}

/// Why an `--auth` specification was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `KIND:` prefix.
    #[error("--auth takes bearer:TOKEN, bearer-file:PATH or basic:USER:PASSWORD")]
    Syntax,
    /// A kind other than bearer, bearer-file or basic.
    #[error("unknown --auth kind '{0}': use bearer, bearer-file or basic")]
    UnknownKind(String),
    /// `bearer:` with nothing after it.
    #[error("bearer takes a non-empty TOKEN")]
    EmptyToken,
    /// The token file could not be read.
    #[error("{}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The token file holds only whitespace.
    #[error("{}: the token file is empty", .0.display())]
    EmptyTokenFile(PathBuf),
    /// `basic:` without a `:` between user and password.
    #[error("basic takes USER:PASSWORD")]
    BasicSyntax,
    /// `basic:` with an empty user or password.
    #[error("basic takes a non-empty USER and PASSWORD")]
    BasicEmpty,
}

/// Query parameters that carry a bearer token for clients that cannot set headers (browsers'
/// WebSocket and EventSource; `jwt` is what WebThings hubs send).
const TOKEN_PARAMETERS: &[&str] = &["access_token", "jwt"];

impl Auth {
    /// `bearer:TOKEN`, `bearer-file:PATH` (first line of the file) or `basic:USER:PASSWORD`.
    pub fn parse(spec: &str) -> Result<Auth, AuthError> {
        let (kind, rest) = spec.split_once(':').ok_or(AuthError::Syntax)?;
        match kind {
            "bearer" if !rest.is_empty() => Ok(Auth::Bearer {
                token: sha256(rest.as_bytes()),
            }),
            "bearer" => Err(AuthError::EmptyToken),
            "bearer-file" => {
                let text = std::fs::read_to_string(rest).map_err(|source| AuthError::TokenFile {
                    path: rest.into(),
                    source,
                })?;
                let token = text.lines().next().unwrap_or("").trim();
                if token.is_empty() {
                    return Err(AuthError::EmptyTokenFile(rest.into()));
                }
                Ok(Auth::Bearer {
                    token: sha256(token.as_bytes()),
                })
            }
            "basic" => {
                let (user, password) = rest.split_once(':').ok_or(AuthError::BasicSyntax)?;
                if user.is_empty() || password.is_empty() {
                    return Err(AuthError::BasicEmpty);
                }
                Ok(Auth::Basic {
                    user: user.to_owned(),
                    password: sha256(password.as_bytes()),
                })
            }
            _ => Err(AuthError::UnknownKind(kind.to_owned())),
        }
    }

    /// Judges a request by its `Authorization` header, or for bearer tokens by a token in the
    /// query string (GET only; the caller decides).
    pub(crate) fn check(&self, authorization: Option<&str>, query: Option<&str>) -> Result<(), Denied> {
        let presented = authorization.map(str::trim);
        match self {
            Auth::Bearer { token } => {
                let from_header = presented.and_then(|h| strip_scheme(h, "bearer"));
                let from_query = query.and_then(query_token);
                match from_header.or(from_query.as_deref()) {
                    None => Err(Denied::Missing),
                    Some(t) if same(&sha256(t.as_bytes()), token) => Ok(()),
                    Some(_) => Err(Denied::Wrong),
                }
            }
            Auth::Basic { user, password } => {
                let encoded = presented
                    .and_then(|h| strip_scheme(h, "basic"))
                    .ok_or(Denied::Missing)?;
                let decoded = base64_decode(encoded).ok_or(Denied::Wrong)?;
                let decoded = String::from_utf8(decoded).map_err(|_| Denied::Wrong)?;
                let (u, p) = decoded.split_once(':').ok_or(Denied::Wrong)?;
                // Both parts are always compared, so timing does not tell which was wrong.
                let user_ok = same(&sha256(u.as_bytes()), &sha256(user.as_bytes()));
                let password_ok = same(&sha256(p.as_bytes()), password);
                if user_ok & password_ok {
                    Ok(())
                } else {
                    Err(Denied::Wrong)
                }
            }
        }
    }

    /// The `WWW-Authenticate` challenge of a 401.
    pub(crate) fn challenge(&self, denied: Denied) -> &'static str {
        match (self, denied) {
            (Auth::Bearer { .. }, Denied::Missing) => "Bearer realm=\"wot\"",
            (Auth::Bearer { .. }, Denied::Wrong) => "Bearer realm=\"wot\", error=\"invalid_token\"",
            (Auth::Basic { .. }, _) => "Basic realm=\"wot\", charset=\"UTF-8\"",
        }
    }

    /// The pre-shared key a `coaps://` client proves under this `--auth` (RFC 4279 PSK): the
    /// identity is `wot` for a bearer token and the user for basic credentials; the key is the
    /// lower-case hex SHA-256 of the token or password (64 ASCII characters, what
    /// `printf %s SECRET | sha256sum` prints). It is made from the digest kept here, so the
    /// secret itself is still not kept; never log it.
    pub fn coaps_key(&self) -> (String, Vec<u8>) {
        let (identity, digest) = match self {
            Auth::Bearer { token } => ("wot", token),
            Auth::Basic { user, password } => (user.as_str(), password),
        };
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        (identity.to_owned(), hex.into_bytes())
    }

    /// `securityDefinitions` and `security` for TDs: exactly what is enforced.
    pub(crate) fn td_security(&self) -> (Value, Value) {
        match self {
            Auth::Bearer { .. } => (
                // `format` and `alg` default to jwt and ES256 (TD 1.1 §5.3.3), which would promise
                // a signed JWT: the token is an opaque secret compared as it is.
                json!({"bearer_sc": {"scheme": "bearer", "in": "header", "name": "Authorization",
                    "format": "opaque", "alg": "none",
                    "description": "An opaque token set with --auth (not a JWT); browsers may also pass it as ?access_token= on GET"}}),
                json!("bearer_sc"),
            ),
            Auth::Basic { .. } => (
                json!({"basic_sc": {"scheme": "basic", "in": "header", "name": "Authorization"}}),
                json!("basic_sc"),
            ),
        }
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        TOKEN_PARAMETERS.contains(&k).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// Which `Host` headers may reach the server. Against DNS rebinding, a page on another site
/// that resolves its own name to this device's address is refused.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// None: any host (containers and reverse proxies).
    allowed: Option<HashSet<String>>,
}

impl HostPolicy {
    /// Any Host is allowed (containers and reverse proxies).
    pub fn any() -> Self {
        HostPolicy { allowed: None }
    }

    /// The local names and addresses of this machine, the `--base-url` host, and `extra`.
    pub fn local(extra: &[String], base_url: Option<&str>) -> Self {
        let mut allowed: HashSet<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let name = name.trim().to_ascii_lowercase();
            if !name.is_empty() {
                allowed.insert(format!("{name}.local"));
                allowed.insert(name);
            }
        }
        if let Ok(interfaces) = if_addrs::get_if_addrs() {
            allowed.extend(interfaces.iter().map(|i| i.ip().to_string()));
        }
        if let Some(host) = base_url
            .and_then(|b| b.split("://").nth(1))
            .map(|rest| rest.split('/').next().unwrap_or(""))
        {
            allowed.insert(host_name(host).to_owned());
        }
        allowed.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        HostPolicy {
            allowed: Some(allowed),
        }
    }

    /// A request without a Host header (HTTP/1.0 tools) is allowed: browsers always send one.
    pub(crate) fn allows(&self, host: Option<&str>) -> bool {
        let (Some(allowed), Some(host)) = (&self.allowed, host) else {
            return true;
        };
        // Checked on every request: lower-cased into a copy only when it has capitals.
        let name = host_name(host);
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(name.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(name)
        };
        allowed.contains(name.as_ref())
            || name.ends_with(".localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// The name part of a Host header: without port, without IPv6 brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Why no TLS configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file has no certificate in it.
    #[error("the certificate file holds no certificate")]
    NoCertificate,
    /// rustls refused its own protocol versions (a build without any).
    #[error(transparent)]
    Protocols(rustls::Error),
    /// The key is not the certificate's.
    #[error("certificate and key do not fit: {0}")]
    KeyMismatch(rustls::Error),
    /// A self-signed certificate could not be made.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The self-signed certificate's directory or files could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The directory or file.
        path: PathBuf,
        /// Why it could not be written.
        source: std::io::Error,
    },
}

/// A server TLS configuration and the SHA-256 fingerprint of its certificate.
pub struct Tls {
    /// The configuration, for [`crate::binding::http::Security::tls`].
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate's SHA-256 fingerprint: upper-case hex pairs joined by colons.
    pub fingerprint: String,
    /// The leaf certificate (DER), for coaps' certificate mode.
    pub certificate: CertificateDer<'static>,
    /// Its private key (DER, as the key file holds it), for coaps' certificate mode.
    pub private_key: PrivateKeyDer<'static>,
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    digest(&SHA256, cert.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn server_config(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Tls, TlsError> {
    let certificate = chain.first().cloned().ok_or(TlsError::NoCertificate)?;
    let fingerprint = fingerprint(&certificate);
    let private_key = key.clone_key();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::KeyMismatch)?;
    Ok(Tls {
        config: Arc::new(config),
        fingerprint,
        certificate,
        private_key,
    })
}

/// Loads a PEM certificate chain and private key.
pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let pem = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Pem { path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    server_config(chain, key)
}

/// A self-signed certificate for this machine's names, made once and kept in `state_dir/tls`.
pub fn self_signed(state_dir: &Path, names: Vec<String>) -> Result<Tls, TlsError> {
    let dir = state_dir.join("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !(cert_path.exists() && key_path.exists()) {
        let written = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Write { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(written(&dir))?;
        let generated = rcgen::generate_simple_self_signed(names)?;
        std::fs::write(&cert_path, generated.cert.pem()).map_err(written(&cert_path))?;
        write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
            .map_err(written(&key_path))?;
    }
    load(&cert_path, &key_path)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(bytes)
}

/// The names a self-signed certificate covers: localhost, this host and its `.local` name, the
/// loopback and interface addresses.
pub fn local_names() -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            names.push(name.to_owned());
            names.push(format!("{name}.local"));
        }
    }
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        names.extend(interfaces.iter().map(|i| i.ip().to_string()));
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_from_header_or_query() {
        let auth = Auth::parse("bearer:s3cret").unwrap();
        assert_eq!(auth.check(Some("Bearer s3cret"), None), Ok(()));
        assert_eq!(auth.check(Some("bearer   s3cret"), None), Ok(()));
        assert_eq!(auth.check(Some("Bearer nope"), None), Err(Denied::Wrong));
        assert_eq!(auth.check(None, None), Err(Denied::Missing));
        assert_eq!(auth.check(None, Some("x=1&access_token=s3cret")), Ok(()));
        assert_eq!(auth.check(None, Some("jwt=s3cre%74")), Ok(()));
        assert_eq!(auth.check(Some("Basic czNjcmV0"), None), Err(Denied::Missing));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn coaps_keys_are_the_hex_digest_of_the_secret() {
        let (identity, key) = Auth::parse("bearer:secret").unwrap().coaps_key();
        assert_eq!(identity, "wot");
        // printf %s secret | sha256sum
        assert_eq!(
            String::from_utf8(key).unwrap(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        let (identity, key) = Auth::parse("basic:ann:secret").unwrap().coaps_key();
        assert_eq!((identity.as_str(), key.len()), ("ann", 64));
    }

    #[test]
    fn basic_credentials() {
        let auth = Auth::parse("basic:admin:pa:ss").unwrap();
        // "admin:pa:ss" in base64
        assert_eq!(auth.check(Some("Basic YWRtaW46cGE6c3M="), None), Ok(()));
        // "admin:wrong"
        assert_eq!(
            auth.check(Some("Basic YWRtaW46d3Jvbmc="), None),
            Err(Denied::Wrong)
        );
        assert_eq!(auth.check(Some("Basic !!!"), None), Err(Denied::Wrong));
        assert_eq!(auth.check(None, Some("access_token=x")), Err(Denied::Missing));
        assert!(matches!(
            Auth::parse("basic:nopassword"),
            Err(AuthError::BasicSyntax)
        ));
        assert!(matches!(Auth::parse("basic::pw"), Err(AuthError::BasicEmpty)));
        assert!(matches!(Auth::parse("digest:x"), Err(AuthError::UnknownKind(k)) if k == "digest"));
        assert!(matches!(Auth::parse("bearer:"), Err(AuthError::EmptyToken)));
        assert!(matches!(Auth::parse("s3cret"), Err(AuthError::Syntax)));
    }

    #[test]
    fn hosts_against_rebinding() {
        let policy = HostPolicy::local(&["lamp.example".into()], Some("https://proxy.example:8443/"));
        for ok in [
            "localhost:8080",
            "127.0.0.1",
            "[::1]:80",
            "lamp.example",
            "PROXY.example:443",
            "app.localhost",
        ] {
            assert!(policy.allows(Some(ok)), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "attacker.com"] {
            assert!(!policy.allows(Some(bad)), "{bad}");
        }
        assert!(policy.allows(None));
        assert!(HostPolicy::any().allows(Some("evil.example")));
    }

    #[test]
    fn self_signed_certificates_are_kept() {
        let dir = std::env::temp_dir().join(format!("wot-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = self_signed(&dir, vec!["localhost".into()]).unwrap();
        let again = self_signed(&dir, vec!["localhost".into()]).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
    }
}
