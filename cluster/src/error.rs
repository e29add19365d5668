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
    #[error("the daemon has no VTEP address to register under: pass --vtep-ip (the address other hosts reach this one at)")]
    NoVtep,
    #[error("starting the store's runtime thread: {0}")]
    Runtime(#[source] std::io::Error),
}
