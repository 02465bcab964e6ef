//! TLS for the HTTP and TCP probers: the client configuration (built once per prober), the handshake,
//! what the session reveals (version, cipher, leaf subject, earliest `notAfter`) and readable failures.
//!
//! The crypto provider is aws-lc-rs, installed into each [`ClientConfig`] rather than as a process
//! default, so library users need no global setup. Trust anchors are Mozilla's (the `webpki-roots`
//! crate) plus an optional PEM file; the node's own CA bundle is not read implicitly (point `ca_file`
//! at it, e.g. `/etc/ssl/certs/ca-certificates.crt`, to trust it).

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::{ConfigError, Reason, TlsDetails};

/// A TLS client configuration, built once and shared by every probe of one prober.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Builds the configuration. `verify = false` accepts any certificate chain and name but still
    /// checks the handshake signatures (so the session is with the holder of the presented key).
    /// `ca_file` is read now: a missing, unreadable or certificate-less file is a config error.
    /// `alpn` lists the protocols offered (e.g. `http/1.1`); empty offers none.
    pub(crate) fn new(
        verify: bool,
        ca_file: Option<&Path>,
        alpn: &[&[u8]],
    ) -> Result<Self, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let extra = ca_file.map(read_ca_file).transpose()?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("TLS configuration: {e}")))?;
        let mut config = if verify {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for (i, cert) in extra.into_iter().flatten().enumerate() {
                roots.add(cert).map_err(|e| {
                    ConfigError(format!(
                        "ca_file: certificate #{} is not a usable trust anchor: {e}",
                        i + 1
                    ))
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            let verifier = AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the handshake over `io` with SNI (and certificate name checks) for `name`, and returns the
    /// stream with what the session revealed.
    pub(crate) async fn handshake<IO>(
        &self,
        name: ServerName<'static>,
        io: IO,
    ) -> Result<(TlsStream<IO>, TlsDetails), TlsFailure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let expected = name.to_str().into_owned();
        let stream = self
            .connector
            .connect(name, io)
            .await
            .map_err(|e| classify(e, &expected))?;
        let details = session_details(stream.get_ref().1)?;
        Ok((stream, details))
    }
}

/// The TLS server name for a host (a DNS name or an IP literal, IPv6 with or without brackets).
/// Errors: text saying why the host cannot be a TLS server name.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_string())
        .map_err(|e| format!("{bare:?} is not a valid TLS server name: {e}"))
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bad = |e: &dyn std::fmt::Display| ConfigError(format!("ca_file {}: {e}", path.display()));
    // Read first so a missing file reports the OS error rather than a PEM error.
    let pem = std::fs::read(path).map_err(|e| bad(&e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsFailure {
    /// The socket failed under the handshake (reset, closed).
    #[error("{0}")]
    Io(io::Error),
    /// The peer or its certificate was rejected; the text says what (expired, unknown issuer, name
    /// mismatch, alert…).
    #[error("{0}")]
    Rejected(String),
}

impl TlsFailure {
    /// The outcome reason: socket errors by errno, everything else `tls-error`.
    pub(crate) fn reason(&self) -> Reason {
        match self {
            TlsFailure::Io(e) => Reason::from_io_error(e),
            TlsFailure::Rejected(_) => Reason::TlsError,
        }
    }
}

fn classify(err: io::Error, expected: &str) -> TlsFailure {
    if let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return TlsFailure::Rejected(describe(tls, expected));
    }
    if err.kind() == io::ErrorKind::UnexpectedEof {
        // Typical of a plain-text server or one that rejects the SNI/ClientHello without an alert.
        return TlsFailure::Rejected(
            "the server closed the connection during the TLS handshake".into(),
        );
    }
    TlsFailure::Io(err)
}

/// Describes a rustls error with the keyword a user searches for first.
fn describe(err: &rustls::Error, expected: &str) -> String {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(cert) => describe_certificate(cert, expected),
        E::AlertReceived(alert) => format!("the server sent TLS alert {alert:?}"),
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            format!("the server does not speak TLS as expected ({err})")
        }
        E::PeerIncompatible(_) => format!("no common TLS version or cipher suite ({err})"),
        _ => err.to_string(),
    }
}

fn describe_certificate(err: &CertificateError, expected: &str) -> String {
    use CertificateError as C;
    match err {
        C::Expired => "certificate expired".into(),
        C::ExpiredContext { not_after, time } => format!(
            "certificate expired: notAfter {} is {}s before now",
            not_after.as_secs(),
            time.as_secs().saturating_sub(not_after.as_secs())
        ),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "certificate not valid yet (notBefore is in the future)".into()
        }
        C::UnknownIssuer => {
            "certificate signed by an unknown issuer (self-signed or a private CA: set ca_file to \
                             the CA's PEM, or tls_verify: false as the kubelet does)"
                .into()
        }
        C::NotValidForName => format!("certificate name mismatch: not valid for {expected:?}"),
        C::NotValidForNameContext { presented, .. } => {
            let mut s = format!("certificate name mismatch: not valid for {expected:?}");
            if !presented.is_empty() {
                let _ = write!(s, "; it names {}", presented.join(", "));
            }
            s
        }
        C::BadSignature => "certificate has a bad signature".into(),
        C::Revoked => "certificate revoked".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "certificate is not valid for TLS server authentication (extended key usage)".into()
        }
        other => format!(
            "invalid certificate: {}",
            rustls::Error::InvalidCertificate(other.clone())
        ),
    }
}

/// Version, cipher and certificate facts of an established session.
fn session_details(conn: &rustls::ClientConnection) -> Result<TlsDetails, TlsFailure> {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let chain = conn.peer_certificates().unwrap_or_default();
    let mut subject = None;
    let mut earliest: Option<i64> = None;
    for (i, der) in chain.iter().enumerate() {
        // With verification off an intermediate may be anything; unparsable ones are skipped, but the
        // leaf must parse or there is nothing to report.
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
            continue;
        };
        if i == 0 {
            subject = Some(cert.subject().to_string());
        }
        let not_after = cert.validity().not_after.timestamp();
        earliest = Some(earliest.map_or(not_after, |e| e.min(not_after)));
    }
    match (subject, earliest) {
        (Some(subject), Some(earliest_not_after)) => Ok(TlsDetails {
            version,
            cipher,
            earliest_not_after,
            subject,
        }),
        _ => Err(TlsFailure::Rejected(
            "the server's certificate cannot be parsed as X.509".into(),
        )),
    }
}

/// Accepts any chain and name; handshake signatures are still verified with the provider's algorithms.
/// This is `tls_verify: false`, the kubelet's `InsecureSkipVerify: true`.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_accept_names_and_ip_literals() {
        assert!(matches!(
            server_name("example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn ca_file_errors_are_config_errors() {
        let missing = TlsClient::new(true, Some(Path::new("/nonexistent/ca.pem")), &[])
            .expect_err("must be rejected");
        assert!(missing.0.contains("/nonexistent/ca.pem"), "{missing}");
        let dir = tempfile::tempdir().expect("valid test input");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem\n").expect("valid test input");
        let err = TlsClient::new(true, Some(&empty), &[]).expect_err("must be rejected");
        assert!(err.0.contains("no PEM CERTIFICATE block"), "{err}");
    }

    #[test]
    fn certificate_errors_name_the_problem() {
        let m = describe(
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "h",
        );
        assert!(m.contains("unknown issuer"), "{m}");
        let m = describe(
            &rustls::Error::InvalidCertificate(CertificateError::Expired),
            "h",
        );
        assert!(m.contains("expired"), "{m}");
        let m = describe(
            &rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            "h",
        );
        assert!(m.contains("name mismatch"), "{m}");
    }
}
