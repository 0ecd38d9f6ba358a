//! `-p` as Docker hands it over (`com.docker.network.portmap`) turned into Weir publications,
//! with Docker's meanings: `HostPort` 0 is any free port, `HostPort`–`HostPortEnd` the first
//! free one of the range, `HostIP` "" every address.

use std::net::IpAddr;

use control::{
    Error, Result,
    published::{HostPorts, Port},
    state::Proto,
};

use crate::api::{Options, PORTMAP, PortBinding};

/// A publication to make: `port` on the host port `host` names.
#[derive(Debug, PartialEq, Eq)]
pub struct Binding {
    pub port: Port,
    pub host: HostPorts,
}

/// Every mapping of `options`, checked: all are supported, or the error names the first that
/// is not (Docker shows it to the user).
pub fn bindings(options: &Options) -> Result<Vec<Binding>> {
    let Some(v) = options.get(PORTMAP) else {
        return Ok(Vec::new());
    };
    let list: Vec<PortBinding> = serde_json::from_value(v.clone())
        .map_err(|e| Error::invalid(format!("{PORTMAP} is not a list of port bindings: {e}")))?;
    list.iter().map(binding).collect()
}

fn binding(b: &PortBinding) -> Result<Binding> {
    let proto = match b.proto {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        132 => {
            return Err(Error::invalid(format!(
                "cannot publish {}/sctp: Weir publishes TCP and UDP ports only",
                b.port
            )));
        }
        n => return Err(Error::invalid(format!("cannot publish IP protocol {n}"))),
    };
    let host_ip = match b.host_ip.as_str() {
        "" | "0.0.0.0" => None,
        // Weir publishes on every address of both families, or on one address.
        "::" => {
            return Err(Error::invalid(format!(
                "cannot publish on [::]:{} alone: Weir publishes on every address of both families (-p {}:{}) or on one address",
                b.host_port, b.host_port, b.port
            )));
        }
        s => {
            Some(s.parse::<IpAddr>().map_err(|_| {
                Error::invalid(format!("cannot publish on {s:?}: not an IP address"))
            })?)
        }
    };
    if b.port == 0 {
        return Err(Error::invalid("a container port of 0 cannot be published"));
    }
    let host = match (b.host_port, b.host_port_end) {
        (0, _) => HostPorts::AnyFree,
        (lo, hi) if hi > lo => HostPorts::FirstFreeIn(lo, hi),
        (p, _) => HostPorts::Exactly(p),
    };
    Ok(Binding {
        port: Port {
            host_ip,
            host_port: b.host_port,
            container_port: b.port,
            proto,
        },
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(v: serde_json::Value) -> Result<Vec<Binding>> {
        bindings(&[(PORTMAP.to_string(), v)].into_iter().collect())
    }

    #[test]
    fn docker_forms() {
        // The payload Docker 20.10 sent for `-p 80 -p 9000-9002:81 -p 127.0.0.1:5353:53/udp
        // -p 8080:80`.
        let got = of(json!([
            {"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":0,"HostPortEnd":0},
            {"Proto":6,"IP":"","Port":81,"HostIP":"","HostPort":9000,"HostPortEnd":9002},
            {"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":5353,"HostPortEnd":5353},
            {"Proto":6,"IP":"","Port":80,"HostIP":"0.0.0.0","HostPort":8080,"HostPortEnd":8080}
        ]))
        .unwrap();
        assert_eq!(got[0].host, HostPorts::AnyFree);
        assert_eq!(got[1].host, HostPorts::FirstFreeIn(9000, 9002));
        assert_eq!(
            (got[1].port.container_port, got[1].port.proto),
            (81, Proto::Tcp)
        );
        assert_eq!(got[2].host, HostPorts::Exactly(5353));
        assert_eq!(
            got[2].port.host_ip,
            Some(std::net::Ipv4Addr::LOCALHOST.into())
        );
        assert_eq!(
            (got[2].port.host_port, got[2].port.proto),
            (5353, Proto::Udp)
        );
        assert_eq!((got[3].port.host_ip, got[3].port.host_port), (None, 8080));
        assert!(bindings(&Options::new()).unwrap().is_empty());
        let v6 = json!([{"Proto":6,"Port":70,"HostIP":"::1","HostPort":7000,"HostPortEnd":7000}]);
        let got = of(v6).unwrap();
        assert_eq!(got[0].port.host_ip, Some("::1".parse().unwrap()));
    }

    #[test]
    fn unsupported_forms_are_refused_by_name() {
        let sctp =
            json!([{"Proto":132,"Port":60,"HostIP":"0.0.0.0","HostPort":6000,"HostPortEnd":6000}]);
        assert!(of(sctp).unwrap_err().to_string().contains("60/sctp"));
        let any6 = json!([{"Proto":6,"Port":70,"HostIP":"::","HostPort":7000,"HostPortEnd":7000}]);
        assert!(of(any6).unwrap_err().to_string().contains("[::]:7000"));
        let bad =
            json!([{"Proto":6,"Port":70,"HostIP":"nowhere","HostPort":7000,"HostPortEnd":7000}]);
        assert!(of(bad).unwrap_err().to_string().contains("nowhere"));
        assert!(of(json!({"not": "a list"})).is_err());
    }
}
