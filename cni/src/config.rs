//! The network configuration on stdin (CNI spec 1.1, sections "Network
//! configuration format", "Deriving execution configuration from plugin
//! configuration" and "Network Configuration Lists"), with the runtime's
//! capability arguments in `runtimeConfig` ("Deriving runtimeConfig"),
//! `prevResult` for `CHECK`, and `cni.dev/valid-attachments` for `GC`.
//!
//! weft's own keys:
//!
//! ```json
//! {"cniVersion": "1.0.0", "name": "front", "type": "weft-cni",
//!  "network": "front", "socket": "/run/weft/weft.sock"}
//! ```
//!
//! `network` (the weft network) defaults to `name`; `socket` to the
//! daemon's default socket.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{
    CniError, DECODING_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, UNSUPPORTED_FIELD,
};
use crate::SUPPORTED_VERSIONS;

/// The parsed configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The weft network; defaults to `name`.
    #[serde(default)]
    pub network: Option<String>,
    /// The daemon's socket; defaults to its default.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The result of the previous plugin or of `ADD` (for `CHECK`, `DEL`).
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// `GC`: the attachments still in use.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// One attachment the runtime still uses (`GC`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The capabilities weft supports ("CNI Conventions": `portMappings`,
/// `aliases`, `ips`, `mac`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Extra DNS names per network name.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Static addresses, `IP/PREFIX` or `IP`.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

/// One published port.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

impl Config {
    /// Parses stdin: bad JSON is error 6, an unsupported version 1, a
    /// configuration without `name` 7.
    pub fn parse(stdin: &[u8]) -> Result<Config, CniError> {
        let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                format!("the network configuration is not valid JSON: {e}"),
            )
        })?;
        let version = value
            .get("cniVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let config: Config = serde_json::from_value(value).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                format!("cannot decode the network configuration: {e}"),
            )
            .version(&version)
        })?;
        check_version(&config.cni_version)?;
        if config.name.is_empty() {
            return Err(invalid(&config, "the network configuration has no `name`"));
        }
        if config.network().is_empty() {
            return Err(invalid(&config, "`network` is empty"));
        }
        Ok(config)
    }

    /// The weft network to attach to.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(weft_api::client::default_socket_path)
    }

    /// The aliases the runtime gives for this network (keyed by the
    /// configuration's `name`, or by the weft network's).
    pub fn aliases(&self) -> Vec<String> {
        let aliases = &self.runtime_config.aliases;
        aliases
            .get(&self.name)
            .or_else(|| aliases.get(self.network()))
            .cloned()
            .unwrap_or_default()
    }

    /// The published ports as weft's `HOSTPORT:PORT/PROTO`.
    pub fn publish(&self) -> Result<Vec<String>, CniError> {
        self.runtime_config
            .port_mappings
            .iter()
            .map(|m| {
                let proto = m.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
                if proto != "tcp" && proto != "udp" {
                    return Err(self.unsupported(format!(
                        "runtimeConfig.portMappings protocol `{proto}`: weft publishes tcp and udp"
                    )));
                }
                if let Some(ip) = m.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
                    if ip != "0.0.0.0" {
                        return Err(self.unsupported(format!(
                            "runtimeConfig.portMappings hostIP `{ip}`: weft publishes on its uplink address only"
                        )));
                    }
                }
                Ok(format!("{}:{}/{proto}", m.host_port, m.container_port))
            })
            .collect()
    }

    /// The static address asked for, without its prefix: the `ips`
    /// capability, else `args_ip`, the `IP` key of `CNI_ARGS` (the CNI
    /// conventions' older way, which podman uses for `--ip`; a comma
    /// separates several).
    pub fn static_ip(&self, args_ip: Option<&str>) -> Result<Option<String>, CniError> {
        let from_args: Vec<String>;
        let (what, list) = if !self.runtime_config.ips.is_empty() {
            ("runtimeConfig.ips", self.runtime_config.ips.as_slice())
        } else {
            from_args = args_ip
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|ip| !ip.is_empty())
                .map(str::to_owned)
                .collect();
            ("CNI_ARGS IP", from_args.as_slice())
        };
        match list {
            [] => Ok(None),
            [one] => {
                let addr = one.split('/').next().unwrap_or_default();
                if addr.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(self.unsupported(format!("{what} `{one}`: weft networks are IPv4")));
                }
                Ok(Some(addr.to_owned()))
            }
            many => Err(self.unsupported(format!(
                "{what} `{}`: weft gives an endpoint one address",
                many.join(",")
            ))),
        }
    }

    /// The static MAC asked for: the `mac` capability, else `args_mac`,
    /// the `MAC` key of `CNI_ARGS` (which podman uses for
    /// `--mac-address`).
    pub fn static_mac(&self, args_mac: Option<&str>) -> Option<String> {
        self.runtime_config
            .mac
            .clone()
            .or_else(|| args_mac.filter(|m| !m.is_empty()).map(str::to_owned))
    }

    /// An error of this configuration (code 7).
    pub fn invalid(&self, msg: impl Into<String>) -> CniError {
        invalid(self, msg)
    }

    fn unsupported(&self, msg: String) -> CniError {
        CniError::new(UNSUPPORTED_FIELD, msg).version(&self.cni_version)
    }
}

fn invalid(config: &Config, msg: impl Into<String>) -> CniError {
    CniError::new(INVALID_CONFIG, msg).version(&config.cni_version)
}

/// Error 1 unless `version` is one this plugin speaks.
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "cniVersion `{version}` is not supported: use one of {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_config() {
        let c = Config::parse(
            br#"{"cniVersion":"1.0.0","name":"front","type":"weft-cni",
            "runtimeConfig":{"aliases":{"front":["web","abc123"]},
            "portMappings":[{"hostPort":18081,"containerPort":80,"protocol":"tcp","hostIP":""}]}}"#,
        )
        .unwrap();
        assert_eq!(c.network(), "front");
        assert_eq!(c.aliases(), ["web", "abc123"]);
        assert_eq!(c.publish().unwrap(), ["18081:80/tcp"]);
        assert_eq!(c.static_ip(None).unwrap(), None);
        assert_eq!(
            c.static_ip(Some("10.1.0.9")).unwrap().as_deref(),
            Some("10.1.0.9")
        );
        assert_eq!(
            c.static_mac(Some("02:00:00:00:00:09")).as_deref(),
            Some("02:00:00:00:00:09")
        );
        assert_eq!(
            c.static_ip(Some("10.1.0.9,fd00::9")).unwrap_err().code,
            UNSUPPORTED_FIELD
        );
    }

    #[test]
    fn codes() {
        assert_eq!(Config::parse(b"{").unwrap_err().code, DECODING_FAILURE);
        assert_eq!(
            Config::parse(br#"{"cniVersion":"0.3.1","name":"a"}"#)
                .unwrap_err()
                .code,
            INCOMPATIBLE_VERSION
        );
        assert_eq!(
            Config::parse(br#"{"cniVersion":"1.0.0"}"#)
                .unwrap_err()
                .code,
            INVALID_CONFIG
        );
        assert_eq!(
            Config::parse(br#"{"cniVersion":"1.0.0","name":5}"#)
                .unwrap_err()
                .code,
            DECODING_FAILURE
        );
        let c = Config::parse(
            br#"{"cniVersion":"1.1.0","name":"a","runtimeConfig":{"ips":["fd00::1/64"]}}"#,
        )
        .unwrap();
        assert_eq!(c.static_ip(None).unwrap_err().code, UNSUPPORTED_FIELD);
        // The capability wins over CNI_ARGS.
        assert_eq!(
            c.static_ip(Some("10.1.0.9")).unwrap_err().code,
            UNSUPPORTED_FIELD
        );
    }
}
