//! `--store`: where the cluster store is and how to log in to it
//! (user and password, and TLS with [`crate::tls`]).

use crate::error::ClusterError;
use crate::tls::{TlsFiles, TlsMaterial};

/// The default key prefix (`--store-prefix`).
pub const DEFAULT_PREFIX: &str = "/weft/";

/// How long a host's lease lives without a keep-alive, in seconds: a host
/// that dies (or loses the store) for longer is withdrawn from every other
/// host, with its endpoints and address blocks. Keep-alives go out every
/// third of it, so a store outage shorter than this (or a store restart,
/// after which etcd renews every lease) withdraws nothing.
pub const DEFAULT_LEASE_TTL: i64 = 10;

/// A parsed `--store` with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// As given, for messages and `status`.
    pub url: String,
    /// `http://HOST:PORT` for each member (`https://` with TLS).
    pub endpoints: Vec<String>,
    /// Key prefix, always ending in `/`.
    pub prefix: String,
    /// etcd user name and password, when etcd has authentication on.
    pub user: Option<(String, String)>,
    /// Lease TTL in seconds.
    pub lease_ttl: i64,
    /// The checked TLS files, for `etcds://` (or `https://`) stores.
    pub tls: Option<TlsMaterial>,
}

impl StoreConfig {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]` (or `etcds://`, `https://`
    /// for TLS) and a key prefix, and reads and checks the TLS files.
    pub fn parse(
        url: &str,
        prefix: &str,
        user: Option<(String, String)>,
        tls: &TlsFiles,
    ) -> Result<StoreConfig, ClusterError> {
        let bad = |why: &str| ClusterError::BadStore {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (secure, rest) = match url.split_once("://") {
            Some(("etcd" | "http", rest)) => (false, rest),
            Some(("etcds" | "https", rest)) => (true, rest),
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "`{scheme}://` is not a store weft knows: use etcd://HOST:PORT[,HOST:PORT...], or etcds:// for TLS"
                )))
            }
            None => return Err(bad("expected etcd://HOST:PORT[,HOST:PORT...], e.g. etcd://127.0.0.1:2379")),
        };
        let mut endpoints = Vec::new();
        for member in rest.split(',') {
            let member = member.trim().trim_end_matches('/');
            let Some((host, port)) = member.rsplit_once(':') else {
                return Err(bad(&format!(
                    "`{member}` has no port: write HOST:PORT, e.g. 127.0.0.1:2379"
                )));
            };
            if host.is_empty() || host.contains('/') || host.contains('@') {
                return Err(bad(&format!("`{member}` is not HOST:PORT")));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => {
                    return Err(bad(&format!(
                        "`{port}` in `{member}` is not a port (1 to 65535)"
                    )))
                }
            }
            let scheme = if secure { "https" } else { "http" };
            endpoints.push(format!("{scheme}://{host}:{port}"));
        }
        if !prefix.starts_with('/')
            || prefix.contains("//")
            || prefix.chars().any(char::is_whitespace)
        {
            return Err(ClusterError::BadPrefix(prefix.to_string()));
        }
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        if !secure && tls.any() {
            return Err(bad(
                "--store-ca, --store-cert and --store-key are for TLS: write the store as etcds://HOST:PORT[,HOST:PORT...]",
            ));
        }
        let tls = if secure {
            Some(TlsMaterial::load(tls)?)
        } else {
            None
        };
        Ok(StoreConfig {
            url: url.to_string(),
            endpoints,
            prefix,
            user,
            lease_ttl: DEFAULT_LEASE_TTL,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_members_and_prefix() {
        let c = StoreConfig::parse(
            "etcd://127.0.0.1:2379,etcd-b:2379",
            "/w",
            None,
            &TlsFiles::default(),
        )
        .unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379", "http://etcd-b:2379"]);
        assert_eq!(c.prefix, "/w/");
        assert_eq!(c.lease_ttl, DEFAULT_LEASE_TTL);
    }

    #[test]
    fn refuses_bad_stores_with_the_reason() {
        for (url, says) in [
            ("127.0.0.1:2379", "expected etcd://"),
            ("consul://x:1", "`consul://` is not a store"),
            ("etcd://x", "has no port"),
            ("etcd://x:0", "is not a port"),
            ("etcd://x:99999", "is not a port"),
            ("etcd://:2379", "is not HOST:PORT"),
        ] {
            let e = StoreConfig::parse(url, DEFAULT_PREFIX, None, &TlsFiles::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says) && e.contains(url), "{url}: {e}");
        }
        assert!(matches!(
            StoreConfig::parse("etcd://x:1", "weft", None, &TlsFiles::default()),
            Err(ClusterError::BadPrefix(_))
        ));
    }

    fn files(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> TlsFiles {
        TlsFiles {
            ca: ca.map(Into::into),
            cert: cert.map(Into::into),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn tls_flags_need_a_tls_store_and_each_other() {
        let plain = StoreConfig::parse(
            "etcd://x:2379",
            DEFAULT_PREFIX,
            None,
            &files(None, Some("/c.pem"), Some("/k.pem")),
        )
        .unwrap_err()
        .to_string();
        assert!(plain.contains("write the store as etcds://"), "{plain}");
        let missing = "/nonexistent/weft-t-ca.pem";
        let e = StoreConfig::parse(
            "etcds://x:2379",
            DEFAULT_PREFIX,
            None,
            &files(Some(missing), None, None),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--store-ca") && e.contains(missing) && e.contains("cannot read"),
            "{e}"
        );
    }
}
