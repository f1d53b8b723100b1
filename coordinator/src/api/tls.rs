//! Transport security on the coordinator's side: the server's TLS configuration from PEM
//! files, and `coordinator tls init`, which makes a private CA, a server certificate, a worker
//! (client) certificate and a token, so a lab or cluster can run mTLS without openssl recipes.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use sweep_proto::tls::{read_pem, TlsError};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Server-side TLS files. With `client_ca`, every worker must present a certificate it signed.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// Reads and checks the files; errors name the file at fault.
    pub fn config(&self) -> Result<ServerTlsConfig, TlsError> {
        let identity = Identity::from_pem(
            read_pem(&self.cert, "server certificate")?,
            read_pem(&self.key, "server key")?,
        );
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_pem(
                ca,
                "client CA certificate",
            )?));
        }
        Ok(config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already exists; pass --force to replace the CA, certificates and token", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid host name `{host}` for the server certificate: {source}")]
    Host { host: String, source: rcgen::Error },
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

pub use crate::app::work::random_token;

/// Writes a file only its owner can read (keys, tokens).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(contents.as_bytes())?;
        // An existing file keeps its old mode through open(); make sure.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    std::fs::write(path, contents)
}

/// The files `init` writes, in the order it writes them.
pub const INIT_FILES: [&str; 8] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "worker.pem",
    "worker-key.pem",
    "token",
    "admin-token",
];

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// Creates a CA, a server certificate for `hosts` (names or IP addresses), one worker client
/// certificate, a worker token and an admin token in `dir`. Refuses to overwrite unless `force`.
pub fn init(
    dir: &Path,
    hosts: &[String],
    days: i64,
    force: bool,
) -> Result<Vec<PathBuf>, InitError> {
    let paths: Vec<PathBuf> = INIT_FILES.iter().map(|f| dir.join(f)).collect();
    if !force {
        if let Some(p) = paths.iter().find(|p| p.exists()) {
            return Err(InitError::Exists(p.clone()));
        }
    }
    for h in hosts {
        CertificateParams::new(vec![h.clone()]).map_err(|source| InitError::Host {
            host: h.clone(),
            source,
        })?;
    }
    let write = |path: &PathBuf, text: &str, private: bool| {
        let r = if private {
            write_private(path, text)
        } else {
            std::fs::write(path, text)
        };
        r.map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| InitError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "sweep cluster CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, days);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    write(&paths[0], &ca_cert.pem(), false)?;
    write(&paths[1], &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |sans: Vec<String>, name: &str, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        validity(&mut p, days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
    };
    let (server, server_key) = leaf(
        hosts.to_vec(),
        "sweep coordinator",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    write(&paths[2], &server, false)?;
    write(&paths[3], &server_key, true)?;
    let (worker, worker_key) = leaf(vec![], "sweep worker", ExtendedKeyUsagePurpose::ClientAuth)?;
    write(&paths[4], &worker, false)?;
    write(&paths[5], &worker_key, true)?;
    write(&paths[6], &random_token(), true)?;
    write(&paths[7], &random_token(), true)?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_loadable_files_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let files = init(dir.path(), &hosts, 30, false).unwrap();
        assert_eq!(files.len(), INIT_FILES.len());
        let tls = ServerTls {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server-key.pem"),
            client_ca: Some(dir.path().join("ca.pem")),
        };
        tls.config().unwrap();
        tonic::transport::Server::builder()
            .tls_config(tls.config().unwrap())
            .expect("tonic accepts the generated identity");
        let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
        assert_eq!(token.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [
                "ca-key.pem",
                "server-key.pem",
                "worker-key.pem",
                "token",
                "admin-token",
            ] {
                let mode = std::fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        let e = init(dir.path(), &hosts, 30, false).unwrap_err();
        assert!(matches!(e, InitError::Exists(_)), "{e}");
        init(dir.path(), &hosts, 30, true).unwrap();
        let again = std::fs::read_to_string(dir.path().join("token")).unwrap();
        assert_ne!(token, again, "--force makes new secrets");
    }

    #[test]
    fn bad_hosts_and_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = init(dir.path(), &["bäd-host".to_string()], 30, false).unwrap_err();
        assert!(e.to_string().contains("bäd-host"), "{e}");
        std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
        let tls = ServerTls {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
        };
        let e = tls.config().unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("no PEM"), "{e}");
    }
}
