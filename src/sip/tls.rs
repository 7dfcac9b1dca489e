//! TLS for SIP (RFC 3261 §26.3.1, RFC 5630): the listener's server configuration from
//! `sip.tls_cert`/`sip.tls_key`, and the client configuration for the connections voxgate
//! opens (`sip.tls_ca`, `sip.tls_verify`). rustls with the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Why a TLS configuration could not be built; `key` is the config key to look at.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{key}`: cannot read {path}: {reason}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("`{key}`: no {what} in {path}")]
    Empty {
        key: &'static str,
        what: &'static str,
        path: PathBuf,
    },
    #[error("`{key}`: {source}")]
    Rustls {
        key: &'static str,
        source: rustls::Error,
    },
}

/// rustls' ring provider. rustls 0.23.48 deprecated it for lacking post-quantum key
/// exchange (only aws-lc-rs has it), but aws-lc-rs needs cmake to build and voxgate must
/// build with the Rust toolchain and a C compiler alone; SIP peers (carriers, phones)
/// negotiate X25519/P-256 anyway.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |reason: String| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key,
            what: "PEM certificate",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The listener's configuration: the chain in `cert` (leaf first) and its `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("sip.tls_cert", cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        key: "sip.tls_key",
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            key: "sip.tls_cert",
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|source| TlsError::Rustls {
            key: "sip.tls_key",
            source,
        })?;
    Ok(Arc::new(config))
}

/// The configuration of connections voxgate opens: the server's certificate is verified
/// against `ca` (PEM) when given, else the web PKI roots; `verify = false` accepts any.
pub fn client_config(ca: Option<&Path>, verify: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            key: "sip.tls_ca",
            source,
        })?;
    let config = if verify {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                for cert in certs("sip.tls_ca", path)? {
                    roots.add(cert).map_err(|source| TlsError::Rustls {
                        key: "sip.tls_ca",
                        source,
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Loads every TLS file the SIP config names, as `serve` would (`voxgate check-config`).
pub fn check(sip: &crate::config::SipConfig) -> Result<(), TlsError> {
    if let (Some(_), Some(cert), Some(key)) = (&sip.listen_tls, &sip.tls_cert, &sip.tls_key) {
        server_config(cert, key)?;
    }
    client_config(sip.tls_ca.as_deref(), sip.tls_verify)?;
    Ok(())
}

/// The name a TLS connection to `host` checks the certificate against (SNI too); an IP
/// address when there is no name.
pub fn server_name(host: Option<&str>, ip: std::net::IpAddr) -> ServerName<'static> {
    host.and_then(|h| ServerName::try_from(h.to_owned()).ok())
        .unwrap_or(ServerName::IpAddress(ip.into()))
}

/// `sip.tls_verify = false`: any certificate is accepted (signatures are still checked,
/// so the handshake proves the peer holds the key of the certificate it showed).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
