//! TLS to etcd (`--store etcds://...`, `--store-ca`, `--store-cert`,
//! `--store-key`): the PEM files are read and checked here, before the
//! daemon starts, so a missing, unreadable or wrong file is refused with
//! the flag and the path it came from; and a failed handshake is told
//! apart from an unreachable store ([`explain_failure`]).
//!
//! The connection is TLS 1.2 or 1.3 (RFC 8446) through rustls, which
//! checks etcd's certificate chain against the CA bundle and the name or
//! address in `--store` against its subjectAltName (RFC 6125 §6, RFC 5280
//! §4.2.1.6). With `--store-cert`/`--store-key` the host presents a client
//! certificate, as etcd's `--client-cert-auth` asks (RFC 8446 §4.4.2).

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ClusterError;

/// The CA bundle used when `--store-ca` is not given (Debian's
/// `ca-certificates`).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS files as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--store-ca`: the CA bundle that signed etcd's certificate.
    pub ca: Option<PathBuf>,
    /// `--store-cert`: this host's client certificate (chain).
    pub cert: Option<PathBuf>,
    /// `--store-key`: the private key of `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file was given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// Checked TLS material: the PEM text of each file, known to parse, with
/// a client key known to match its certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// Where the CA bundle came from (for messages).
    pub ca_path: PathBuf,
    ca_pem: Vec<u8>,
    /// Client certificate and key paths and PEM text.
    identity: Option<(PathBuf, Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsMaterial")
            .field("ca_path", &self.ca_path)
            .field("client_cert", &self.identity.as_ref().map(|(p, _, _)| p))
            .finish()
    }
}

fn bad_file(flag: &'static str, path: &Path, why: impl Into<String>) -> ClusterError {
    ClusterError::BadTlsFile {
        flag,
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path).map_err(|e| bad_file(flag, path, format!("cannot read it ({e})")))
}

/// Every certificate in a PEM file; an error when there is none.
fn certificates(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
    let certs = rustls_pemfile::certs(&mut Cursor::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(flag, path, format!("it is not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad_file(
            flag,
            path,
            "it holds no certificate: give a PEM file with a '-----BEGIN CERTIFICATE-----' block",
        ));
    }
    Ok(certs)
}

impl TlsMaterial {
    /// Reads and checks the files. Without `--store-ca` the system's CA
    /// bundle ([`SYSTEM_CA_BUNDLE`]) is used.
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, ClusterError> {
        match (&files.cert, &files.key) {
            (None, Some(_)) => return Err(ClusterError::TlsFlags(
                "--store-key needs --store-cert: give the client certificate the key belongs to"
                    .into(),
            )),
            (Some(_), None) => {
                return Err(ClusterError::TlsFlags(
                    "--store-cert needs --store-key: give the certificate's private key".into(),
                ))
            }
            _ => {}
        }
        let ca_path = files
            .ca
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
        let ca_pem = read("--store-ca", &ca_path)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates("--store-ca", &ca_path, &ca_pem)? {
            roots.add(cert).map_err(|e| {
                bad_file(
                    "--store-ca",
                    &ca_path,
                    format!("a certificate in it is not a usable CA certificate ({e})"),
                )
            })?;
        }
        let identity = match (&files.cert, &files.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read("--store-cert", cert_path)?;
                let key_pem = read("--store-key", key_path)?;
                let chain = certificates("--store-cert", cert_path, &cert_pem)?;
                let key: PrivateKeyDer<'static> =
                    match rustls_pemfile::private_key(&mut Cursor::new(&key_pem)) {
                        Ok(Some(key)) => key,
                        Ok(None) => return Err(bad_file(
                            "--store-key",
                            key_path,
                            "it holds no private key: give a PEM file with a '-----BEGIN PRIVATE KEY-----' (or RSA/EC PRIVATE KEY) block",
                        )),
                        Err(e) => {
                            return Err(bad_file(
                                "--store-key",
                                key_path,
                                format!("it is not valid PEM ({e})"),
                            ))
                        }
                    };
                // The same checks the connection makes: the key loads and
                // matches the certificate.
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ClusterError::TlsFlags(format!("TLS setup: {e}")))?
                    .with_root_certificates(roots)
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| {
                        bad_file(
                            "--store-key",
                            key_path,
                            format!(
                                "it cannot sign for --store-cert {} ({e}): give the key that belongs to that certificate",
                                cert_path.display()
                            ),
                        )
                    })?;
                Some((cert_path.clone(), cert_pem, key_pem))
            }
            _ => None,
        };
        Ok(TlsMaterial {
            ca_path,
            ca_pem,
            identity,
        })
    }

    /// The client's TLS options.
    pub fn options(&self) -> TlsOptions {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((_, cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        tls
    }

    /// Whether a client certificate is presented.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }
}

/// The whole chain of an error's causes, as one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// When a failure to reach the store is a TLS failure, what it means and
/// what to do; `None` for anything else.
pub fn explain_failure(why: &str, tls: Option<&TlsMaterial>) -> Option<String> {
    let ca = tls
        .map(|t| t.ca_path.display().to_string())
        .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
    if why.contains("invalid peer certificate") {
        let hint = if why.contains("UnknownIssuer") || why.contains("BadSignature") {
            format!("etcd's certificate is not signed by a CA in --store-ca {ca}: give the CA that issued etcd's --cert-file")
        } else if why.contains("NotValidForName") || why.contains("not valid for name") {
            "etcd's certificate does not name the host or address in --store: connect by a name in its subjectAltName, or reissue it with this one".to_string()
        } else if why.contains("Expired") || why.contains("NotValidYet") {
            "etcd's certificate is outside its validity period: renew it (or check this host's clock)".to_string()
        } else {
            format!("etcd's certificate was not accepted: check it against --store-ca {ca}")
        };
        return Some(format!(
            "TLS verification of etcd's certificate failed ({}); {hint}",
            excerpt(why, "invalid peer certificate")
        ));
    }
    if why.contains("alert") && (why.contains("Certificate") || why.contains("certificate")) {
        let hint = match tls {
            Some(t) if t.has_identity() => "etcd did not accept this host's client certificate: give a --store-cert signed by a CA in etcd's --trusted-ca-file",
            _ => "etcd asks for a client certificate (--client-cert-auth): pass --store-cert and --store-key",
        };
        return Some(format!(
            "etcd refused the TLS handshake ({}); {hint}",
            excerpt(why, "received fatal alert")
        ));
    }
    // With TLS 1.3 the client may finish its side of the handshake before
    // etcd rejects the missing certificate; then only a closed connection
    // is seen.
    if let Some(t) = tls.filter(|t| !t.has_identity()) {
        if why.contains("broken pipe") || why.contains("connection reset") {
            return Some(format!(
                "etcd closed the TLS connection ({why}), as it does when it checks client certificates (--client-cert-auth) and gets none: pass --store-cert and --store-key (the CA was --store-ca {})",
                t.ca_path.display()
            ));
        }
    }
    if why.contains("InvalidContentType") || why.contains("corrupt message") {
        return Some(format!(
            "the store did not answer TLS ({}); if etcd serves plain gRPC there, write --store etcd://",
            excerpt(why, "received corrupt message")
        ));
    }
    None
}

/// Why a first plain (`etcd://`) connection failed, when it looks like a
/// store that serves TLS: etcd closes a connection that sends it plain
/// gRPC on a TLS port, which the client sees as a broken pipe or a reset,
/// not as a refusal.
pub fn explain_plain_failure(why: &str) -> Option<String> {
    let closed = ["broken pipe", "connection reset"]
        .into_iter()
        .find(|c| why.contains(c))?;
    Some(format!(
        "it closed the connection ({}), as etcd does when it serves TLS there and is sent plain gRPC; if it serves TLS, write the store as etcds:// (with --store-ca unless the system's CAs signed its certificate)",
        excerpt(why, closed)
    ))
}

/// The part of `why` from `from` to the transport's repetition of it (or
/// the end), or all of `why`.
fn excerpt<'a>(why: &'a str, from: &str) -> &'a str {
    let Some(start) = why.find(from) else {
        return why;
    };
    let rest = &why[start..];
    rest.find(": transport error")
        .map_or(rest, |end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_say_what_to_do() {
        let unknown = "transport error: invalid peer certificate: UnknownIssuer: transport error: invalid peer certificate: UnknownIssuer";
        let e = explain_failure(unknown, None).unwrap();
        assert!(e.contains("TLS verification of etcd's certificate failed (invalid peer certificate: UnknownIssuer)"), "{e}");
        assert!(e.contains(SYSTEM_CA_BUNDLE), "{e}");
        let name = "invalid peer certificate: certificate not valid for name \"localhost\"";
        assert!(explain_failure(name, None)
            .unwrap()
            .contains("does not name the host or address in --store"));
        let alert = "transport error: received fatal alert: BadCertificate";
        assert!(explain_failure(alert, None)
            .unwrap()
            .contains("pass --store-cert and --store-key"));
        let plain = "transport error: received corrupt message of type InvalidContentType";
        assert!(explain_failure(plain, None)
            .unwrap()
            .contains("write --store etcd://"));
        // Not a TLS failure: left to the caller.
        assert_eq!(explain_failure("connection refused", None), None);
        assert_eq!(explain_failure("broken pipe", None), None);
    }

    #[test]
    fn a_plain_connection_closed_on_the_spot_suggests_tls() {
        let closed = "transport error: transport error: connection error: stream closed because of a broken pipe";
        let e = explain_plain_failure(closed).unwrap();
        assert!(e.contains("(broken pipe)"), "{e}");
        assert!(e.contains("write the store as etcds://"), "{e}");
        assert!(explain_plain_failure("connection reset by peer").is_some());
        assert_eq!(
            explain_plain_failure("Connection refused (os error 111)"),
            None
        );
    }

    #[test]
    fn flags_are_checked_before_files() {
        let files = TlsFiles {
            ca: Some("/nonexistent/weft-t-ca.pem".into()),
            cert: None,
            key: Some("/nonexistent/weft-t-key.pem".into()),
        };
        let e = TlsMaterial::load(&files).unwrap_err().to_string();
        assert!(e.contains("--store-key needs --store-cert"), "{e}");
    }
}
