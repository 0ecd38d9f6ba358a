//! The remote network driver protocol's messages (libnetwork `drivers/remote/api`), as Docker
//! 20.10–29 sends them: JSON with Go's field names. Unknown fields are ignored (newer Dockers
//! add some); missing ones take their zero value, as Go's decoder gives them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Options Docker passes through: `com.docker.network.*` keys and the user's `-o` under
/// `com.docker.network.generic`.
pub type Options = BTreeMap<String, Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    /// The subnet, `10.77.0.0/24`.
    pub pool: String,
    /// The gateway in CIDR form, `10.77.0.1/24`.
    pub gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub options: Options,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Vec<IpamData>,
}

/// DeleteNetwork.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    /// Docker's IPAM choice, in CIDR form.
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    /// `""` unless the user gave `--mac-address`.
    pub mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: EndpointInterface,
    pub options: Options,
}

/// Leave, DeleteEndpoint, EndpointOperInfo, RevokeExternalConnectivity, and (with options)
/// Join and ProgramExternalConnectivity.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// Join: the container's namespace (which may not exist yet on Docker ≤ 27).
    pub sandbox_key: String,
    pub options: Options,
}

/// One `-p` mapping, from `com.docker.network.portmap`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    /// `""` (every address), an IPv4 or an IPv6 address.
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    /// 0: any free port.
    pub host_port: u16,
    /// Above `host_port`: the first free port in the range.
    pub host_port_end: u16,
}

pub const PORTMAP: &str = "com.docker.network.portmap";
pub const INTERNAL: &str = "com.docker.network.internal";
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const GENERIC: &str = "com.docker.network.generic";
pub const MTU: &str = "com.docker.network.driver.mtu";
/// Weir's own: the network's members reach each other only by rule.
pub const ISOLATED: &str = "weir.isolated";
/// The bridge driver's inter-container switch; `false` means what `weir.isolated=true` does.
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinReply {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    /// Internal networks: no gateway, and no `docker_gwbridge` instead of one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disable_gateway_service: bool,
}

/// An error reply: Docker shows it to the user as `remote: <Err>`.
pub fn err(msg: impl std::fmt::Display) -> Value {
    serde_json::json!({ "Err": msg.to_string() })
}
