//! How a worker (or any client) reaches the coordinator: TLS by default, plaintext only when
//! asked for.
//!
//! `https://` uses TLS with the CA given (or the system's roots) and, for mTLS, a client
//! certificate. `http://` is plaintext: accepted on loopback (the laptop case, where
//! `coordinator sweep` and its local workers share one machine) and elsewhere only with an
//! explicit opt-in, so a typo cannot send the token in the clear across a network.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid coordinator address `{0}`: expected https://HOST:PORT or http://HOST:PORT")]
    BadUrl(String),
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM {what} found in this file", path.display())]
    NoPem { what: &'static str, path: PathBuf },
    #[error("refusing plaintext to `{0}`: use https:// (with --tls-ca), or pass --plaintext to send the token unencrypted")]
    PlaintextRefused(String),
    #[error("{0} needs an https:// coordinator address")]
    TlsOptionsWithoutHttps(&'static str),
    #[error("--tls-cert and --tls-key go together (a client certificate needs its key)")]
    HalfIdentity,
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// Client-side TLS files, all optional: the flags of every client (`worker`, the
/// coordinator's `--server` commands), flattened into their clap commands.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientTls {
    /// CA certificate (PEM) that signed the coordinator's certificate (default: the system's
    /// roots; https:// only).
    #[arg(long = "tls-ca", value_name = "TLS_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for coordinators that require mTLS.
    #[arg(long = "tls-cert", value_name = "TLS_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long = "tls-key", value_name = "TLS_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name to check the coordinator's certificate against (default: the URL's host).
    #[arg(long = "tls-domain", value_name = "TLS_DOMAIN")]
    pub domain: Option<String>,
    /// Allow an http:// coordinator that is not on loopback (the token crosses in clear).
    #[arg(long)]
    pub plaintext: bool,
}

/// Adds `authorization: Bearer <token>` to every request: the one client-side half of the
/// token check (worker token for workers, admin token for admin commands).
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// `None` when the token has characters a header cannot carry.
    pub fn new(token: &str) -> Option<Bearer> {
        format!("Bearer {token}").parse().ok().map(Bearer)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Reads a PEM file and checks it holds at least one `what` block, so a wrong path or an empty
/// file is reported by name here, not as an opaque handshake failure later.
pub fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let marker = if what.contains("key") {
        "PRIVATE KEY-----"
    } else {
        "-----BEGIN CERTIFICATE-----"
    };
    if !text.contains(marker) {
        return Err(TlsError::NoPem {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h))
}

/// True for names and addresses that never leave this machine.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Builds the endpoint for `url`, with TLS set up from `tls` for `https://`.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, TlsError> {
    let bad = || TlsError::BadUrl(url.to_string());
    let host = host_of(url).filter(|h| !h.is_empty()).ok_or_else(bad)?;
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|_| bad())?
        .connect_timeout(Duration::from_secs(5));
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(TlsError::HalfIdentity);
    }
    match url.split_once("://").map(|(s, _)| s) {
        Some("https") => {
            let mut config = ClientTlsConfig::new();
            config = match &tls.ca {
                Some(ca) => {
                    config.ca_certificate(Certificate::from_pem(read_pem(ca, "CA certificate")?))
                }
                None => config.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                config = config.identity(Identity::from_pem(
                    read_pem(cert, "client certificate")?,
                    read_pem(key, "client key")?,
                ));
            }
            if let Some(d) = &tls.domain {
                config = config.domain_name(d.clone());
            }
            endpoint
                .tls_config(config)
                .map_err(|e| TlsError::Setup(e.to_string()))
        }
        Some("http") => {
            if tls.ca.is_some() || tls.cert.is_some() {
                return Err(TlsError::TlsOptionsWithoutHttps("--tls-ca/--tls-cert"));
            }
            if !tls.plaintext && !is_loopback(host) {
                return Err(TlsError::PlaintextRefused(url.to_string()));
            }
            Ok(endpoint)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_found_in_urls() {
        for (url, host) in [
            ("http://127.0.0.1:50051", "127.0.0.1"),
            ("https://coord.lab:443/", "coord.lab"),
            ("http://[::1]:9", "::1"),
            ("http://localhost", "localhost"),
        ] {
            assert_eq!(host_of(url), Some(host), "{url}");
        }
        assert!(is_loopback("::1") && is_loopback("127.0.0.2") && is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("coord.lab"));
    }

    #[test]
    fn plaintext_is_refused_off_loopback_unless_asked_for() {
        let none = ClientTls::default();
        assert!(endpoint("http://127.0.0.1:1", &none).is_ok());
        let e = endpoint("http://10.1.2.3:50051", &none).unwrap_err();
        assert!(e.to_string().contains("--plaintext"), "{e}");
        let ok = ClientTls {
            plaintext: true,
            ..ClientTls::default()
        };
        assert!(endpoint("http://10.1.2.3:50051", &ok).is_ok());
        for bad in ["10.1.2.3:50051", "ftp://x:1", "http://"] {
            assert!(
                matches!(endpoint(bad, &none), Err(TlsError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn tls_files_are_checked_by_name() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let with = |ca: &Path| ClientTls {
            ca: Some(ca.to_path_buf()),
            ..ClientTls::default()
        };
        let e = endpoint("https://coord:1", &with(&empty)).unwrap_err();
        assert!(
            e.to_string().contains("empty.pem") && e.to_string().contains("no PEM"),
            "{e}"
        );
        let e = endpoint("https://coord:1", &with(&dir.join("nope.pem"))).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let half = ClientTls {
            cert: Some(empty.clone()),
            ..ClientTls::default()
        };
        assert!(matches!(
            endpoint("https://coord:1", &half),
            Err(TlsError::HalfIdentity)
        ));
        let e = endpoint("http://127.0.0.1:1", &with(&empty)).unwrap_err();
        assert!(matches!(e, TlsError::TlsOptionsWithoutHttps(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
