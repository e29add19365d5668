//! Why the cluster store could not be used.

/// Errors starting the cluster agent; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--store `{url}`: {why}")]
    BadStore { url: String, why: String },
    #[error("--store-prefix `{0}` is not a key prefix: start it with '/' and use no spaces or '//', e.g. /weft/")]
    BadPrefix(String),
    #[error("cannot reach the store at {url}: {why}; check that etcd runs there and that --store names its client address")]
    Unreachable { url: String, why: String },
    #[error("{flag} {}: {why}", path.display())]
    BadTlsFile {
        flag: &'static str,
        path: std::path::PathBuf,
        why: String,
    },
    #[error("{0}")]
    TlsFlags(String),
    #[error("cannot use the store at {url}: {why}")]
    ClosedOnPlain { url: String, why: String },
    #[error("cannot connect to the store at {url} over TLS: {why}")]
    TlsRefused { url: String, why: String },
    #[error("the store at {url} refused to log in: {why}; check --store-user and --store-password (or WEFT_STORE_PASSWORD) against etcd's users (`etcdctl user list`)")]
    AuthRefused { url: String, why: String },
    #[error("the daemon has no VTEP address to register under: pass --vtep-ip (the address other hosts reach this one at)")]
    NoVtep,
    #[error("starting the store's runtime thread: {0}")]
    Runtime(#[source] std::io::Error),
}
