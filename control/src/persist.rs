//! The daemon's saved state: networks and routes, kept across restarts in
//! `STATE_DIR/state.json`. Endpoints are not saved: their TAP devices live
//! only as long as the daemon that made them.

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

/// Everything saved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedState {
    pub networks: Vec<SavedNetwork>,
    pub routes: Vec<(String, String)>,
    /// Peer VTEPs as `IP:PORT`.
    #[serde(default)]
    pub peers: Vec<String>,
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
    #[error("{} is not a weft state file ({source}): move it away to start with no networks", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
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
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| PersistError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedState::default()),
            Err(e) => Err(io_error("read", &self.path)(e)),
        }
    }

    /// Replaces the saved state atomically (write a temporary file, fsync,
    /// rename over the old one).
    pub fn save(&self, state: &SavedState) -> Result<(), PersistError> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(state).expect("the state always serializes");
        let mut file = fs::File::create(&tmp).map_err(io_error("create", &tmp))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_error("replace", &self.path))?;
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
            peers: vec!["192.0.2.7:4789".into()],
        };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
        fs::write(dir.join("state.json"), b"garbage").unwrap();
        assert!(file.load().is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
