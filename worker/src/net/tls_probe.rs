//! Does the coordinator require a client certificate? A bare TLS handshake that records
//! whether the server sent a CertificateRequest.
//!
//! A worker without `--tls-cert` talking to an mTLS coordinator is refused *after* its TLS 1.3
//! handshake completes: the server's alert races the worker's first HTTP/2 frames, and on a
//! busy machine the worker often sees only "connection reset" or "broken pipe", which look
//! like a network fault and were retried forever. The CertificateRequest, by contrast, arrives
//! inside the handshake, every time; so after any failed connection without a client
//! certificate the worker probes once and stops with the real reason if one was asked for.
//!
//! The probe sends no application data (no token), so it does not verify the server's
//! certificate: it only learns what the server asks for.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Remembers that the server asked for a client certificate; offers none.
#[derive(Debug, Default)]
struct AskedForCertificate(AtomicBool);

impl ResolvesClientCert for AskedForCertificate {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::SeqCst);
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate: the probe only looks, and sends nothing.
#[derive(Debug)]
struct LookOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for LookOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// True when the TLS server at `host:port` asks for a client certificate. Any failure to
/// reach it (or a timeout) is `false`: the caller keeps treating that as a network problem.
pub async fn requires_client_certificate(host: &str, port: u16) -> bool {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let asked = Arc::new(AskedForCertificate::default());
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LookOnly(provider)))
        .with_client_cert_resolver(asked.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let probe = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        // The handshake may succeed or fail (the server aborts once it sees no certificate);
        // either way the request, if any, has been seen by now.
        let _ = connector.connect(name, tcp).await;
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), probe).await;
    asked.0.load(Ordering::SeqCst)
}
