//! The ADD success result (SPEC.md §5 "Success"), shaped for the request's version, merged
//! into a `prevResult` when a plugin ran before us in the chain.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use super::version::Version;

/// What one attachment made: the host-side veth, the container interface and its address.
#[derive(Debug, Clone)]
pub struct Attached {
    pub host_if: String,
    pub host_mac: String,
    pub ifname: String,
    pub mac: String,
    pub sandbox: String,
    /// The IPv4 address, its prefix length and gateway (None on an IPv6-only network).
    pub ip: Option<(Ipv4Addr, u8, Ipv4Addr)>,
    /// On a dual-stack network: the IPv6 address, its prefix length and gateway.
    pub ip6: Option<(Ipv6Addr, u8, Ipv6Addr)>,
}

/// The result of ADD. `dns` is the configuration's `dns` section (Weir runs no resolver of
/// its own); `prev` is the chain's `prevResult`, which we extend rather than replace.
pub fn add_result(v: Version, a: &Attached, dns: Option<&Value>, prev: Option<&Value>) -> Value {
    let mut out = match prev {
        Some(Value::Object(p)) => Value::Object(p.clone()),
        _ => json!({}),
    };
    let interfaces = array(&mut out, "interfaces");
    let host_idx = interfaces.len();
    interfaces.push(json!({ "name": a.host_if, "mac": a.host_mac }));
    interfaces.push(json!({ "name": a.ifname, "mac": a.mac, "sandbox": a.sandbox }));
    if let Some((ip4, prefix, gw)) = a.ip {
        let mut ip = json!({
            "address": format!("{ip4}/{prefix}"),
            "gateway": gw.to_string(),
            "interface": host_idx + 1,
        });
        if v.ips_carry_family() {
            ip["version"] = json!("4");
        }
        array(&mut out, "ips").push(ip);
        array(&mut out, "routes").push(json!({ "dst": "0.0.0.0/0", "gw": gw.to_string() }));
    }
    if let Some((ip6, prefix6, gw6)) = a.ip6 {
        let mut ip = json!({
            "address": format!("{ip6}/{prefix6}"),
            "gateway": gw6.to_string(),
            "interface": host_idx + 1,
        });
        if v.ips_carry_family() {
            ip["version"] = json!("6");
        }
        array(&mut out, "ips").push(ip);
        array(&mut out, "routes").push(json!({ "dst": "::/0", "gw": gw6.to_string() }));
    }
    let prev_dns_empty = out
        .get("dns")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty());
    if prev_dns_empty {
        out["dns"] = dns.cloned().unwrap_or_else(|| json!({}));
    }
    out["cniVersion"] = json!(v.to_string());
    out
}

fn array<'a>(out: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !out.get(key).is_some_and(Value::is_array) {
        out[key] = json!([]);
    }
    out[key].as_array_mut().expect("just made an array")
}

/// The IPv4 addresses a (previous) result lists, with their prefix lengths.
pub fn ipv4s(result: &Value) -> Vec<(Ipv4Addr, u8)> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i.get("address")?.as_str())
                .filter_map(|s| {
                    let (a, p) = s.split_once('/')?;
                    Some((a.parse().ok()?, p.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached() -> Attached {
        Attached {
            host_if: "wr-10".into(),
            host_mac: "02:fe:0a:00:00:02".into(),
            ifname: "eth0".into(),
            mac: "02:42:0a:00:00:02".into(),
            sandbox: "/run/netns/x".into(),
            ip: Some((Ipv4Addr::new(10, 0, 0, 2), 24, Ipv4Addr::new(10, 0, 0, 1))),
            ip6: None,
        }
    }

    #[test]
    fn dual_stack_lists_both_families() {
        let a = Attached {
            ip6: Some(("fd00::2".parse().unwrap(), 64, "fd00::1".parse().unwrap())),
            ..attached()
        };
        let r = add_result(Version::parse("0.4.0").unwrap(), &a, None, None);
        assert_eq!(r["ips"][1]["address"], "fd00::2/64");
        assert_eq!(r["ips"][1]["version"], "6");
        assert_eq!(r["ips"][1]["gateway"], "fd00::1");
        assert_eq!(r["routes"][1]["dst"], "::/0");
        assert_eq!(ipv4s(&r), vec![(Ipv4Addr::new(10, 0, 0, 2), 24)]);
    }

    #[test]
    fn shaped_per_version() {
        let r = add_result(Version::V1_0_0, &attached(), None, None);
        assert_eq!(r["cniVersion"], "1.0.0");
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/x");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["ips"][0]["address"], "10.0.0.2/24");
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(r["dns"], json!({}));
        let old = add_result(Version::parse("0.3.1").unwrap(), &attached(), None, None);
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(ipv4s(&old), vec![(Ipv4Addr::new(10, 0, 0, 2), 24)]);
    }

    #[test]
    fn extends_prev_result() {
        let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"x"}],
            "ips":[{"address":"10.9.0.2/24","interface":0}],"dns":{"nameservers":["1.1.1.1"]}});
        let dns = json!({"nameservers":["9.9.9.9"]});
        let r = add_result(Version::V1_1_0, &attached(), Some(&dns), Some(&prev));
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["ips"][1]["interface"], 2);
        assert_eq!(r["dns"]["nameservers"][0], "1.1.1.1");
        assert_eq!(r["cniVersion"], "1.1.0");
    }
}
