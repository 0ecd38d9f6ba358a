//! The plugin configuration a runtime streams on stdin: the conflist entry plus `cniVersion`,
//! `name`, `runtimeConfig` and `prevResult` (SPEC.md §3 "Deriving execution configuration").
//!
//! Weir's own keys: `stateDir` (which Weir instance, default /var/lib/weir), `network` (the
//! Weir network, default the CNI network `name`), `hostNetns` (the named namespace that
//! instance serves, when it was initialised with --host-netns) and `busyTimeout` (seconds to
//! wait for the instance lock before answering "try again later").

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_json::Value;

use super::{
    error::{CniError, CniResult, code},
    version::Version,
};
use control::{instance::DEFAULT_STATE_DIR, state::Proto, validate};

#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(rename = "stateDir")]
    pub state_dir: Option<PathBuf>,
    pub network: Option<String>,
    #[serde(rename = "hostNetns")]
    pub host_netns: Option<String>,
    #[serde(rename = "busyTimeout")]
    pub busy_timeout: Option<f64>,
    pub ipam: Option<Value>,
    /// Passed through into the ADD result.
    pub dns: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    #[serde(rename = "prevResult")]
    pub prev_result: Option<Value>,
    /// GC: the attachments the runtime still knows.
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Capability arguments we declare: `portMappings`, `ips`, `mac` (CONVENTIONS.md).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub ips: Vec<String>,
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: i64,
    #[serde(rename = "containerPort")]
    pub container_port: i64,
    pub protocol: Option<String>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// A port mapping Weir can publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl NetConf {
    /// Decodes stdin (code 6 on malformed JSON or wrong types) and checks the version (code 1).
    pub fn decode(bytes: &[u8]) -> CniResult<(Self, Version)> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE,
                "failed to decode the network configuration",
                e.to_string(),
            )
        })?;
        let v = Version::parse(&conf.cni_version)?;
        Ok((conf, v))
    }

    /// Checks the keys every command relies on (code 7, or 2 for what Weir does not support).
    pub fn validate(&self) -> CniResult<()> {
        if self.name.is_empty() {
            return Err(CniError::config("missing network name (\"name\")"));
        }
        validate::name("CNI network", &self.name).map_err(|e| CniError::config(e.to_string()))?;
        validate::name("Weir network", self.network())
            .map_err(|e| CniError::config(format!("\"network\": {e}")))?;
        if let Some(h) = &self.host_netns {
            validate::name("host namespace", h)
                .map_err(|e| CniError::config(format!("\"hostNetns\": {e}")))?;
        }
        if let Some(d) = &self.state_dir
            && !d.is_absolute()
        {
            return Err(CniError::config(format!(
                "\"stateDir\" {} must be an absolute path",
                d.display()
            )));
        }
        if let Some(t) = self.busy_timeout
            && !(t > 0.0 && t <= 3600.0)
        {
            return Err(CniError::config(format!(
                "\"busyTimeout\" {t} must be a number of seconds between 0 and 3600"
            )));
        }
        match &self.ipam {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.is_empty() => {}
            Some(v) => {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!("unsupported field \"ipam\": {v}"),
                    "Weir assigns addresses from its network's subnet itself (pass IP=... in CNI_ARGS for a fixed one): remove the ipam section",
                ));
            }
        }
        Ok(())
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_STATE_DIR))
    }

    /// How long to wait for the instance lock.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
            .map(Duration::from_secs_f64)
            .unwrap_or(super::busy::DEFAULT_TIMEOUT)
    }

    /// The Weir network: `network`, else the CNI network's name.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    /// `runtimeConfig.portMappings` as Weir publishes them.
    pub fn mappings(&self) -> CniResult<Vec<Mapping>> {
        self.runtime_config
            .port_mappings
            .iter()
            .map(mapping)
            .collect()
    }
}

fn mapping(p: &PortMapping) -> CniResult<Mapping> {
    let port = |what: &str, n: i64| {
        u16::try_from(n).ok().filter(|p| *p != 0).ok_or_else(|| {
            CniError::config(format!("portMappings: {what} {n} is not a port (1-65535)"))
        })
    };
    let proto = match p
        .protocol
        .as_deref()
        .unwrap_or("tcp")
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("unsupported field \"portMappings.protocol\": {other:?}"),
                "Weir publishes tcp and udp ports",
            ));
        }
    };
    let host_ip = match p.host_ip.as_deref().unwrap_or("") {
        "" | "0.0.0.0" | "::" => None,
        s => Some(s.parse::<IpAddr>().map_err(|_| {
            CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("unsupported field \"portMappings.hostIP\": {s:?}"),
                "hostIP must be an IPv4 or IPv6 address of the host",
            )
        })?),
    };
    Ok(Mapping {
        host_ip,
        host_port: port("hostPort", p.host_port)?,
        container_port: port("containerPort", p.container_port)?,
        proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(s: &str) -> CniResult<NetConf> {
        let (c, _) = NetConf::decode(s.as_bytes())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn minimal_and_defaults() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"web","type":"weir-cni"}"#).unwrap();
        assert_eq!(c.network(), "web");
        assert_eq!(c.state_dir(), Path::new("/var/lib/weir"));
        assert!(c.mappings().unwrap().is_empty());
    }

    #[test]
    fn port_mappings() {
        let c = conf(
            r#"{"cniVersion":"0.4.0","name":"n","type":"weir-cni","network":"w","stateDir":"/tmp/x",
            "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""},
            {"hostPort":53,"containerPort":5353,"protocol":"UDP","hostIP":"198.18.0.1"}]}}"#,
        )
        .unwrap();
        let m = c.mappings().unwrap();
        assert_eq!(m[0].host_port, 8080);
        assert_eq!(m[0].host_ip, None);
        assert_eq!(m[1].proto, Proto::Udp);
        assert_eq!(m[1].host_ip, Some("198.18.0.1".parse().unwrap()));
        for (bad, want) in [
            (r#"{"hostPort":0,"containerPort":80}"#, code::INVALID_CONFIG),
            (
                r#"{"hostPort":70000,"containerPort":80}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"hostPort":80,"containerPort":80,"protocol":"sctp"}"#,
                code::UNSUPPORTED_FIELD,
            ),
            (
                r#"{"hostPort":80,"containerPort":80,"hostIP":"nowhere"}"#,
                code::UNSUPPORTED_FIELD,
            ),
        ] {
            let c = conf(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"weir-cni","runtimeConfig":{{"portMappings":[{bad}]}}}}"#
            ))
            .unwrap();
            assert_eq!(c.mappings().unwrap_err().code, want, "{bad}");
        }
    }

    #[test]
    fn bad_configs() {
        for (s, want) in [
            ("not json", code::DECODE),
            (r#"{"cniVersion":1}"#, code::DECODE),
            (
                r#"{"name":"n","type":"weir-cni"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (
                r#"{"cniVersion":"9.9.9","name":"n","type":"weir-cni"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (
                r#"{"cniVersion":"1.0.0","type":"weir-cni"}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","network":"../x"}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","stateDir":"rel"}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","busyTimeout":0}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","busyTimeout":"5"}"#,
                code::DECODE,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#,
                code::UNSUPPORTED_FIELD,
            ),
        ] {
            assert_eq!(conf(s).unwrap_err().code, want, "{s}");
        }
    }
}
