//! The daemon's saved state, kept across restarts in
//! `STATE_DIR/state.json`: everything the API can create (networks,
//! routes, peers, the uplink, endpoints with their published ports and DNS
//! aliases, services with their backends).
//!
//! The file carries a format [`STATE_VERSION`]; a file without one is a
//! version 1 file (networks, routes and peers only) and loads as such. A
//! newer version, or a file that does not parse, is refused with an error
//! that says what to do, and the file is left as it is: nothing is loaded
//! from it and nothing overwrites it. Saving is atomic and durable: write a
//! temporary file, fsync it, rename it over the old one, fsync the
//! directory, so a crash at any point leaves the old state or the new one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A network as saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedNetwork {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    pub mtu: u32,
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// NAT behaviour (state files from before it existed get the default).
    #[serde(default)]
    pub nat: weft_api::NatSettings,
}

/// The format this build writes. 1: networks, routes, peers (no version
/// field). 2: everything the API creates.
pub const STATE_VERSION: u32 = 2;

/// An endpoint as saved: enough to take its TAP back (or make it again)
/// with the same name, address and MAC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedEndpoint {
    pub network: String,
    pub name: String,
    /// The namespace's path as it was opened.
    pub netns: String,
    /// Device and inode of the namespace file: a different namespace at
    /// the same path (the container was replaced) is not this endpoint's.
    pub netns_id: (u64, u64),
    pub ifname: String,
    pub ip: String,
    pub mac: String,
    /// Whether attach set the namespace's default route.
    #[serde(default)]
    pub default_route: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Published ports as `HOSTPORT:PORT/PROTO`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<weft_api::EndpointOwner>,
}

/// The NAT uplink as saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedUplink {
    /// The interface; empty for the socket uplink.
    pub interface: String,
    /// The socket uplink (`uplink set --sockets`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sockets: bool,
    /// `IP/PREFIX`.
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A service as saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedService {
    pub name: String,
    pub network: String,
    pub vip: String,
    /// `PORT/PROTO`.
    pub port: String,
    pub backends: Vec<String>,
    /// `rr` or `hash`.
    pub lb: String,
}

/// Everything saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedState {
    /// The format; absent in version 1 files.
    #[serde(default = "version_one")]
    pub version: u32,
    pub networks: Vec<SavedNetwork>,
    pub routes: Vec<(String, String)>,
    /// Peer VTEPs as `IP:PORT`.
    #[serde(default)]
    pub peers: Vec<String>,
    /// The IPs of the `peers` sent to with remote checksum offload (a list
    /// of its own, so that files without it, and builds that do not know
    /// it, still read the peers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_csum_peers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<SavedUplink>,
    #[serde(default)]
    pub endpoints: Vec<SavedEndpoint>,
    #[serde(default)]
    pub services: Vec<SavedService>,
}

fn version_one() -> u32 {
    1
}

impl Default for SavedState {
    fn default() -> Self {
        SavedState {
            version: STATE_VERSION,
            networks: Vec::new(),
            routes: Vec::new(),
            peers: Vec::new(),
            remote_csum_peers: Vec::new(),
            uplink: None,
            endpoints: Vec::new(),
            services: Vec::new(),
        }
    }
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a weft state file ({source}); it was left untouched: repair it, or move it away to start with nothing", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is a version {found} state file, newer than this weft understands (version {STATE_VERSION}); it was left untouched: run the weft that wrote it, or move the file away to start with nothing", path.display())]
    TooNew { path: PathBuf, found: u32 },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PersistError {
    let path = path.to_path_buf();
    move |source| PersistError::Io {
        action,
        path,
        source,
    }
}

/// The state file in a state directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// Uses `dir/state.json`, creating `dir` if needed.
    pub fn in_dir(dir: &Path) -> Result<Self, PersistError> {
        fs::create_dir_all(dir).map_err(io_error("create the state directory", dir))?;
        Ok(StateFile {
            path: dir.join("state.json"),
        })
    }

    /// The saved state, or an empty one when nothing was saved yet.
    pub fn load(&self) -> Result<SavedState, PersistError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                // The version first, so a newer file whose other fields
                // this build cannot read is reported as newer, not corrupt.
                #[derive(Deserialize)]
                struct Version {
                    #[serde(default = "version_one")]
                    version: u32,
                }
                let corrupt = |source| PersistError::Corrupt {
                    path: self.path.clone(),
                    source,
                };
                let Version { version } = serde_json::from_slice(&bytes).map_err(corrupt)?;
                if version > STATE_VERSION {
                    return Err(PersistError::TooNew {
                        path: self.path.clone(),
                        found: version,
                    });
                }
                serde_json::from_slice(&bytes).map_err(corrupt)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedState::default()),
            Err(e) => Err(io_error("read", &self.path)(e)),
        }
    }

    /// Replaces the saved state atomically and durably (write a temporary
    /// file, fsync it, rename it over the old one, fsync the directory).
    /// The state is written as [`STATE_VERSION`] whatever it was read as.
    pub fn save(&self, state: &SavedState) -> Result<(), PersistError> {
        let tmp = self.path.with_extension("json.tmp");
        let mut state = state.clone();
        state.version = STATE_VERSION;
        let text = serde_json::to_vec_pretty(&state).expect("the state always serializes");
        let mut file = fs::File::create(&tmp).map_err(io_error("create", &tmp))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_error("replace", &self.path))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("sync the state directory", dir))?;
        Ok(())
    }

    /// Where the state is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = std::env::temp_dir().join(format!("weft-t{}-persist", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = StateFile::in_dir(&dir).unwrap();
        assert_eq!(file.load().unwrap(), SavedState::default());
        let state = SavedState {
            version: STATE_VERSION,
            networks: vec![SavedNetwork {
                name: "a".into(),
                subnet: "10.0.0.0/24".into(),
                gateway: "10.0.0.1".into(),
                mtu: 1500,
                internal: false,
                vni: Some(42),
                ip_range: Some("10.0.0.128/25".into()),
                nat: weft_api::NatSettings::default(),
            }],
            routes: vec![("a".into(), "b".into())],
            peers: vec!["192.0.2.7:4789".into(), "192.0.2.8:4789".into()],
            remote_csum_peers: vec!["192.0.2.8".into()],
            uplink: Some(SavedUplink {
                interface: "eth9".into(),
                sockets: false,
                ip: "192.0.2.10/24".into(),
                gateway: Some("192.0.2.1".into()),
            }),
            endpoints: vec![SavedEndpoint {
                network: "a".into(),
                name: "web".into(),
                netns: "/var/run/netns/web".into(),
                netns_id: (4, 4026532001),
                ifname: "eth0".into(),
                ip: "10.0.0.2".into(),
                mac: "02:00:00:00:00:02".into(),
                default_route: true,
                aliases: vec!["www".into()],
                publish: vec!["8080:80/tcp".into()],
                resolv_conf: None,
                owner: None,
            }],
            services: vec![SavedService {
                name: "s".into(),
                network: "a".into(),
                vip: "10.0.0.200".into(),
                port: "80/tcp".into(),
                backends: vec!["web".into()],
                lb: "rr".into(),
            }],
        };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_one_file_loads() {
        let dir = std::env::temp_dir().join(format!("weft-t{}-persist-v1", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = StateFile::in_dir(&dir).unwrap();
        fs::write(
            file.path(),
            br#"{"networks":[{"name":"a","subnet":"10.0.0.0/24","gateway":"10.0.0.1","mtu":1500,"internal":false}],"routes":[],"peers":[]}"#,
        )
        .unwrap();
        let loaded = file.load().unwrap();
        assert_eq!(loaded.version, 1);
        assert_eq!(loaded.networks.len(), 1);
        assert!(loaded.endpoints.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_and_newer_files_are_refused_and_left_untouched() {
        let dir = std::env::temp_dir().join(format!("weft-t{}-persist-bad", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = StateFile::in_dir(&dir).unwrap();
        for (text, want) in [
            (&b"garbage{"[..], "is not a weft state file"),
            (
                &br#"{"version":2,"networks":7}"#[..],
                "is not a weft state file",
            ),
            (
                &br#"{"version":99,"networks":[],"something":"new"}"#[..],
                "version 99 state file, newer",
            ),
        ] {
            fs::write(file.path(), text).unwrap();
            let e = file.load().unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert!(e.to_string().contains("left untouched"), "{e}");
            assert_eq!(fs::read(file.path()).unwrap(), text, "the file was changed");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
