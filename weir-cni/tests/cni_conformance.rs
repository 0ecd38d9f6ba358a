//! Issue #7: weir-cni driven exactly as a runtime drives a CNI plugin (environment + stdin,
//! answer on stdout), against a sandboxed Weir instance, with namespaces we create ourselves
//! standing in for the runtime's.

use std::{
    io::Write,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text};
use serde_json::{Value, json};

mod support;
use support::control;
const PLUGIN: &str = env!("CARGO_BIN_EXE_weir-cni");

/// One plugin run: exit status, stdout parsed (Null when empty), stderr.
struct Reply {
    ok: bool,
    out: Value,
    err: String,
}

/// Runs weir-cni with only the given environment (as libcni does: CNI_* plus PATH) and
/// `stdin` as its configuration.
fn call(vars: &[(&str, &str)], stdin: &str) -> Reply {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running weir-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let stdout = text(&o.stdout);
    let out = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("weir-cni stdout is not JSON ({e}): {stdout}"))
    };
    Reply {
        ok: o.status.success(),
        out,
        err: text(&o.stderr),
    }
}

/// An attachment request: the namespace stands in for the runtime's.
struct Req<'a> {
    cmd: &'a str,
    id: &'a str,
    ns: Option<&'a Netns>,
    ifname: &'a str,
    args: &'a str,
}

impl Req<'_> {
    fn run(&self, conf: &Value) -> Reply {
        let netns = self.ns.map(|n| n.path().display().to_string());
        let mut vars = vec![
            ("CNI_COMMAND", self.cmd),
            ("CNI_CONTAINERID", self.id),
            ("CNI_IFNAME", self.ifname),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        if let Some(p) = &netns {
            vars.push(("CNI_NETNS", p));
        }
        if !self.args.is_empty() {
            vars.push(("CNI_ARGS", self.args));
        }
        call(&vars, &conf.to_string())
    }
}

fn req<'a>(cmd: &'a str, id: &'a str, ns: &'a Netns) -> Req<'a> {
    Req {
        cmd,
        id,
        ns: Some(ns),
        ifname: "eth0",
        args: "",
    }
}

/// The plugin configuration a runtime would derive from a conflist naming this sandbox.
fn conf(s: &Sandbox, version: &str, network: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "cninet",
        "type": "weir-cni",
        "stateDir": s.state_dir,
        "network": network,
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

/// A spec error: non-zero exit, `cniVersion`, numeric `code`, `msg` on stdout.
fn assert_error(r: &Reply, code: u64, version: &str) -> String {
    assert!(!r.ok, "expected error {code}, got success: {}", r.out);
    assert_eq!(
        r.out["code"].as_u64(),
        Some(code),
        "wrong code: {} (stderr {})",
        r.out,
        r.err
    );
    assert_eq!(
        r.out["cniVersion"], version,
        "error without version: {}",
        r.out
    );
    let msg = r.out["msg"].as_str().expect("msg");
    assert!(!msg.is_empty());
    let allowed = ["cniVersion", "code", "msg", "details"];
    for k in r.out.as_object().unwrap().keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "unexpected key {k} in {}",
            r.out
        );
    }
    format!("{msg} {}", r.out["details"].as_str().unwrap_or(""))
}

/// Checks an ADD result against the spec's required fields for `version` and returns the
/// container address.
fn assert_spec_result(r: &Value, version: &str, sandbox: &str) -> Ipv4Addr {
    let keys = ["cniVersion", "interfaces", "ips", "routes", "dns"];
    for k in r.as_object().expect("result is an object").keys() {
        assert!(keys.contains(&k.as_str()), "unexpected key {k}");
    }
    assert_eq!(r["cniVersion"], version);
    let ifs = r["interfaces"].as_array().expect("interfaces");
    for i in ifs {
        assert!(!i["name"].as_str().expect("interface name").is_empty());
        let mac = i["mac"]
            .as_str()
            .expect("mac (L2 addresses are meaningful)");
        assert_eq!(mac.split(':').count(), 6, "{mac}");
    }
    let ips = r["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "{r}");
    let ip = &ips[0];
    let idx = ip["interface"].as_u64().expect("ips[].interface") as usize;
    assert_eq!(
        ifs[idx]["sandbox"], sandbox,
        "ips[0] must point at the sandbox interface: {r}"
    );
    if version.starts_with("0.") {
        assert_eq!(ip["version"], "4", "{version} results carry the IP family");
    } else {
        assert!(ip.get("version").is_none(), "1.x dropped ips[].version");
    }
    let (addr, prefix) = ip["address"]
        .as_str()
        .and_then(|a| a.split_once('/'))
        .expect("CIDR address");
    let addr: Ipv4Addr = addr.parse().expect("IPv4");
    let prefix: u8 = prefix.parse().expect("prefix");
    let gw: Ipv4Addr = ip["gateway"].as_str().unwrap().parse().expect("gateway");
    assert!(prefix <= 32 && gw != addr);
    for route in r["routes"].as_array().expect("routes") {
        let dst = route["dst"].as_str().expect("route dst");
        assert!(dst.contains('/'), "{dst}");
        if let Some(g) = route.get("gw") {
            g.as_str().unwrap().parse::<Ipv4Addr>().expect("route gw");
        }
    }
    assert!(r["dns"].is_object(), "dns must be an object");
    addr
}

/// The `control container ls --json` entry whose netns is `ns`.
fn listed(s: &Sandbox, ns: &Netns) -> Option<Value> {
    let p = ns.path().display().to_string();
    s.json(&["container", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["netns"] == p.as_str())
        .cloned()
}

fn host_veths(s: &Sandbox) -> Vec<String> {
    text(&s.host.run(&["ip", "-o", "link", "show"]).stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| {
            n.trim_end_matches(':')
                .split('@')
                .next()
                .unwrap()
                .to_string()
        })
        .filter(|n| n.starts_with("wr-"))
        .collect()
}

/// How many entries a pinned map of the sandbox's instance holds.
fn map_entries(s: &Sandbox, map: &str) -> usize {
    let inst = control::instance::Instance::new(&s.state_dir).unwrap();
    let pin = inst.map_pin(map);
    let out = rig::must(&[
        "bpftool",
        "-j",
        "map",
        "dump",
        "pinned",
        pin.to_str().unwrap(),
    ]);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("bpftool output for {map} ({e}): {out}"))
        .as_array()
        .expect("bpftool dumps an array")
        .len()
}

/// The pinned links (from_container attachments and the shared hooks).
fn pinned_links(s: &Sandbox) -> usize {
    let inst = control::instance::Instance::new(&s.state_dir).unwrap();
    std::fs::read_dir(inst.links_dir()).unwrap().count()
}

/// Puts a file's saved content back (also when the test panics: the sandbox's teardown needs
/// the real state).
struct RestoreOnDrop(std::path::PathBuf, Vec<u8>);

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, &self.1);
    }
}

fn has_link(ns: &Netns, name: &str) -> bool {
    ns.run(&["ip", "link", "show", name]).status.success()
}

#[test]
fn add_check_del_round_trip() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.70.0.0/24", &[]);
    let c = Netns::new(&s.name("c"));
    let conf = conf(&s, "1.0.0", &n);
    let id = "f00dfeed0123456789abcdef";
    let links_before = pinned_links(&s);

    let r = req("ADD", id, &c).run(&conf);
    assert!(r.ok, "ADD failed: {} {}", r.out, r.err);
    let ip = assert_spec_result(&r.out, "1.0.0", &c.path().display().to_string());
    assert_eq!(ip, Ipv4Addr::new(10, 70, 0, 2));
    let addrs = c.must(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("10.70.0.2/24"), "{addrs}");
    assert!(c.must(&["ip", "route"]).contains("default via 10.70.0.1"));

    // A container like any other: listed, healthy, forwarded by the datapath.
    let entry = listed(&s, &c).expect("CNI container in `container ls`");
    assert_eq!(entry["ip"], "10.70.0.2");
    assert_eq!(entry["network"], n.as_str());
    assert!(
        entry["name"]
            .as_str()
            .unwrap()
            .starts_with("cni-f00dfeed0123")
    );
    let st = s.json(&["status"]);
    assert_eq!(st["containers"], 1);
    assert_eq!(st["problems"], json!([]), "{st}");
    assert!(net::ping(&c, EXT_IP, 1), "no egress");
    let _web = net::http_server(&c, 8000, "cni");
    assert_eq!(
        net::curl(&s.host, "http://10.70.0.2:8000/", 5).as_deref(),
        Some("cni")
    );
    assert!(s.path_packets("egress-masquerade") > 0);
    assert_eq!(map_entries(&s, "WEIR_ENDPOINTS"), 1);
    assert!(map_entries(&s, "WEIR_CT") > 0);
    assert_eq!(
        pinned_links(&s),
        links_before + 2,
        "from_container and to_container"
    );

    let check = with(conf.clone(), "prevResult", r.out.clone());
    let ck = req("CHECK", id, &c).run(&check);
    assert!(ck.ok && ck.out.is_null(), "CHECK: {} {}", ck.out, ck.err);
    // CHECK notices what it must: the interface gone from the container.
    c.must(&["ip", "link", "set", "eth0", "down"]);
    let bad = req("CHECK", id, &c).run(&check);
    assert!(assert_error(&bad, 1002, "1.0.0").contains("eth0 is down"));
    c.must(&["ip", "link", "set", "eth0", "up"]);

    let del = with(conf.clone(), "prevResult", r.out.clone());
    let d = req("DEL", id, &c).run(&del);
    assert!(d.ok && d.out.is_null(), "DEL: {} {}", d.out, d.err);
    assert!(listed(&s, &c).is_none());
    assert!(host_veths(&s).is_empty(), "{:?}", host_veths(&s));
    assert!(!has_link(&c, "eth0"));
    assert!(
        c.path().exists(),
        "Weir must never delete the runtime's namespace"
    );
    assert_eq!(s.json(&["status"])["containers"], 0);
    assert!(!net::ping(&s.host, "10.70.0.2", 1));
    // Every map entry and link the attachment had is gone.
    assert_eq!(map_entries(&s, "WEIR_ENDPOINTS"), 0);
    assert_eq!(map_entries(&s, "WEIR_CT"), 0, "its flows stay in conntrack");
    assert_eq!(pinned_links(&s), links_before);
    // DEL again (no namespace, no prevResult), and CHECK after DEL.
    let again = Req {
        ns: None,
        ..req("DEL", id, &c)
    }
    .run(&conf);
    assert!(again.ok && again.out.is_null(), "{}", again.out);
    assert_error(&req("CHECK", id, &c).run(&check), 3, "1.0.0");
    // The address is free again.
    let r2 = req("ADD", "other0", &c).run(&conf);
    assert!(r2.ok, "{}", r2.out);
    assert_eq!(r2.out["ips"][0]["address"], "10.70.0.2/24");
}

#[test]
fn older_versions_are_shaped_as_they_were() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.71.0.0/24", &[]);
    for (i, v) in ["0.3.1", "0.4.0", "1.1.0"].iter().enumerate() {
        let c = Netns::new(&s.name(&format!("c{i}")));
        let id = format!("vers{i}");
        let conf = conf(&s, v, &n);
        let r = req("ADD", &id, &c).run(&conf);
        assert!(r.ok, "{v}: {} {}", r.out, r.err);
        assert_spec_result(&r.out, v, &c.path().display().to_string());
        let check = with(conf.clone(), "prevResult", r.out.clone());
        let ck = req("CHECK", &id, &c).run(&check);
        if *v == "0.3.1" {
            // CHECK arrived in 0.4.0.
            assert_error(&ck, 1, v);
        } else {
            assert!(ck.ok, "{v}: CHECK {}", ck.out);
        }
        let d = req("DEL", &id, &c).run(&check);
        assert!(d.ok, "{v}: {}", d.out);
    }
    assert!(host_veths(&s).is_empty());
}

#[test]
fn version_command() {
    for stdin in [r#"{"cniVersion":"1.0.0"}"#, r#"{"cniVersion":"0.4.0"}"#, ""] {
        let r = call(&[("CNI_COMMAND", "VERSION")], stdin);
        assert!(r.ok, "{stdin}: {}", r.out);
        let want = if stdin.is_empty() {
            "1.1.0"
        } else {
            &stdin[15..20]
        };
        assert_eq!(r.out["cniVersion"], want);
        let sv: Vec<&str> = r.out["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for v in ["0.3.1", "0.4.0", "1.0.0"] {
            assert!(sv.contains(&v), "{sv:?}");
        }
    }
}

/// The environment of a request for `cmd` from container `bad0` in `netns`.
fn env_of<'a>(cmd: &'static str, netns: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "bad0"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
    ]
}

#[test]
fn bad_requests_get_spec_errors() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.72.0.0/24", &[]);
    let c = Netns::new(&s.name("c"));
    let good = conf(&s, "1.0.0", &n);
    let netns = c.path().display().to_string();
    environment_errors(&netns, &good.to_string());
    configuration_errors(&netns, &good);
    address_errors(&s, &netns, &good.to_string());
    uninitialised_errors(&s, &netns, &good);
}

/// Environment: code 4, naming the variable.
fn environment_errors(netns: &str, g: &str) {
    let env = |cmd| env_of(cmd, netns);
    let without = |cmd: &'static str, var: &str| {
        let mut e = env(cmd);
        e.retain(|(k, _)| *k != var);
        e
    };
    let replaced = |var: &'static str, val: &'static str| {
        let mut e = env("ADD");
        e.retain(|(k, _)| *k != var);
        e.push((var, val));
        e
    };
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let m = assert_error(&call(&without("ADD", var), g), 4, "1.0.0");
        assert!(m.contains(var), "{m}");
    }
    assert!(
        assert_error(&call(&without("CHECK", "CNI_NETNS"), g), 4, "1.0.0").contains("CNI_NETNS")
    );
    assert_error(&call(&without("ADD", "CNI_COMMAND"), g), 4, "1.0.0");
    assert_error(&call(&replaced("CNI_COMMAND", "FROB"), g), 4, "1.0.0");
    assert_error(
        &call(&replaced("CNI_IFNAME", "way-too-long-name"), g),
        4,
        "1.0.0",
    );
    assert_error(&call(&replaced("CNI_CONTAINERID", "../x"), g), 4, "1.0.0");
    assert_error(
        &call(&replaced("CNI_NETNS", "/run/netns/does-not-exist-7"), g),
        4,
        "1.0.0",
    );
    assert_error(&call(&replaced("CNI_ARGS", "IP"), g), 4, "1.0.0");
    assert_error(&call(&replaced("CNI_ARGS", "IP=not-an-ip"), g), 4, "1.0.0");
}

/// Configuration: decode 6, version 1, invalid 7, unsupported 2.
fn configuration_errors(netns: &str, good: &Value) {
    let env = |cmd| env_of(cmd, netns);
    let g = good.to_string();
    assert_error(&call(&env("ADD"), "{not json"), 6, "1.1.0");
    assert_error(
        &call(&env("ADD"), r#"{"cniVersion":"1.0.0","name":7}"#),
        6,
        "1.0.0",
    );
    let m = assert_error(
        &call(
            &env("ADD"),
            &with(good.clone(), "cniVersion", json!("2.0.0")).to_string(),
        ),
        1,
        "2.0.0",
    );
    assert!(m.contains("1.0.0"), "should list supported versions: {m}");
    assert_error(
        &call(
            &env("ADD"),
            &with(good.clone(), "cniVersion", json!("0.2.0")).to_string(),
        ),
        1,
        "0.2.0",
    );
    let mut nameless = good.clone();
    nameless.as_object_mut().unwrap().remove("name");
    assert_error(&call(&env("ADD"), &nameless.to_string()), 7, "1.0.0");
    assert_error(
        &call(
            &env("ADD"),
            &with(good.clone(), "network", json!("no-such-net")).to_string(),
        ),
        7,
        "1.0.0",
    );
    assert_error(
        &call(
            &env("ADD"),
            &with(good.clone(), "stateDir", json!("relative/dir")).to_string(),
        ),
        7,
        "1.0.0",
    );
    assert_error(
        &call(
            &env("ADD"),
            &with(good.clone(), "hostNetns", json!("someone-else")).to_string(),
        ),
        7,
        "1.0.0",
    );
    let m = assert_error(
        &call(
            &env("ADD"),
            &with(good.clone(), "ipam", json!({"type": "host-local"})).to_string(),
        ),
        2,
        "1.0.0",
    );
    assert!(m.contains("ipam") && m.contains("host-local"), "{m}");
    let sctp = json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]});
    assert!(
        assert_error(
            &call(
                &env("ADD"),
                &with(good.clone(), "runtimeConfig", sctp).to_string()
            ),
            2,
            "1.0.0"
        )
        .contains("sctp")
    );
    assert_error(&call(&env("CHECK"), &g), 7, "1.0.0"); // no prevResult
    assert_error(&call(&env("STATUS"), &g), 1, "1.0.0"); // STATUS is 1.1.0
    assert_error(&call(&env("GC"), &g), 1, "1.0.0");
}

/// Addresses: outside the subnet 7, taken 1001.
fn address_errors(s: &Sandbox, netns: &str, g: &str) {
    let env = |cmd| env_of(cmd, netns);
    let outside = vec![("CNI_ARGS", "IP=10.99.0.5")];
    assert_error(&call(&[env("ADD"), outside].concat(), g), 7, "1.0.0");
    let fixed = [
        env("ADD"),
        vec![("CNI_ARGS", "IgnoreUnknown=1;IP=10.72.0.50")],
    ]
    .concat();
    assert!(call(&fixed, g).ok);
    let c2 = Netns::new(&s.name("c2"));
    let netns2 = c2.path().display().to_string();
    let mut taken = fixed.clone();
    taken.retain(|(k, _)| *k != "CNI_NETNS" && *k != "CNI_CONTAINERID");
    taken.push(("CNI_NETNS", &netns2));
    taken.push(("CNI_CONTAINERID", "bad1"));
    assert!(assert_error(&call(&taken, g), 1001, "1.0.0").contains("10.72.0.50"));
    assert!(
        !has_link(&c2, "eth0"),
        "a failed ADD must leave nothing behind"
    );
    assert_eq!(host_veths(s).len(), 1);
}

/// Not initialised: ADD fails clearly, DEL succeeds, STATUS says not available.
fn uninitialised_errors(s: &Sandbox, netns: &str, good: &Value) {
    let env = |cmd| env_of(cmd, netns);
    let fresh = with(
        good.clone(),
        "stateDir",
        json!(format!("{}-never", s.state_dir.display())),
    );
    let m = assert_error(&call(&env("ADD"), &fresh.to_string()), 1000, "1.0.0");
    assert!(m.contains("control init"), "{m}");
    assert!(call(&env("DEL"), &fresh.to_string()).ok);
    let fresh11 = with(fresh, "cniVersion", json!("1.1.0"));
    assert_error(&call(&env("STATUS"), &fresh11.to_string()), 50, "1.1.0");
}

#[test]
fn del_of_unknown_container_succeeds() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.73.0.0/24", &[]);
    let c = Netns::new(&s.name("c"));
    let conf = conf(&s, "1.0.0", &n);
    for ns in [Some(&c), None] {
        let r = Req {
            ns,
            ..req("DEL", "never-added", &c)
        }
        .run(&conf);
        assert!(r.ok && r.out.is_null(), "{} {}", r.out, r.err);
    }
    // Even on a network that does not exist (any more).
    let gone = with(conf, "network", json!("gone"));
    assert!(req("DEL", "never-added", &c).run(&gone).ok);
}

#[test]
fn repeated_add_is_refused_and_stale_attachments_are_replaced() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.74.0.0/24", &[]);
    let c = Netns::new(&s.name("c"));
    let conf = conf(&s, "1.0.0", &n);
    let first = req("ADD", "rep0", &c).run(&conf);
    assert!(first.ok, "{}", first.out);

    // Same attachment again without DEL: an error (the interface exists), nothing changes.
    assert_error(&req("ADD", "rep0", &c).run(&conf), 1001, "1.0.0");
    // Another container id, same namespace and interface name: the spec's "must error".
    let m = assert_error(&req("ADD", "rep1", &c).run(&conf), 1001, "1.0.0");
    assert!(m.contains("eth0"), "{m}");
    let check = with(conf.clone(), "prevResult", first.out.clone());
    assert!(
        req("CHECK", "rep0", &c).run(&check).ok,
        "the first attachment must be intact"
    );
    assert_eq!(host_veths(&s).len(), 1);
    // A second interface of the same container on the same network: refused — and the DEL
    // the runtime then sends for it (the spec's cleanup after a failed ADD) is about that
    // interface, not the first one.
    let net1 = Req {
        ifname: "net1",
        ..req("ADD", "rep0", &c)
    };
    assert_error(&net1.run(&conf), 1001, "1.0.0");
    let d = Req {
        ifname: "net1",
        ..req("DEL", "rep0", &c)
    }
    .run(&conf);
    assert!(d.ok, "{} {}", d.out, d.err);
    assert!(
        req("CHECK", "rep0", &c).run(&check).ok,
        "a DEL of net1 removed the eth0 attachment"
    );
    assert!(has_link(&c, "eth0"));
    // A second interface in the same namespace is a different attachment (another network).
    let n2 = s.network("n2", "10.75.0.0/24", &[]);
    let conf2 = self::conf(&s, "1.0.0", &n2);
    let second = Req {
        ifname: "eth1",
        ..req("ADD", "rep0", &c)
    }
    .run(&conf2);
    assert!(second.ok, "{}", second.out);
    assert!(has_link(&c, "eth1"));
    assert!(
        Req {
            ifname: "eth1",
            ..req("DEL", "rep0", &c)
        }
        .run(&conf2)
        .ok
    );
    assert!(has_link(&c, "eth0") && !has_link(&c, "eth1"));

    // The host veth vanished behind Weir's back (host crash, someone's `ip link del`): ADD
    // replaces the stale attachment instead of failing forever.
    let veth = host_veths(&s).pop().unwrap();
    s.host.must(&["ip", "link", "del", &veth]);
    let again = req("ADD", "rep0", &c).run(&conf);
    assert!(again.ok, "{} {}", again.out, again.err);
    assert!(again.err.contains("stale"), "{}", again.err);
    assert!(net::ping(&s.host, "10.74.0.2", 1));

    // A crash in the middle of ADD: the record is left Creating with the journal set.
    let state = s.state_dir.join("state.json");
    let mut st: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    for (_, c) in st["containers"].as_object_mut().unwrap() {
        c["phase"] = json!("creating");
    }
    std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
    std::fs::write(s.state_dir.join("journal"), "cni add (simulated crash)").unwrap();
    // The runtime saw ADD fail and, as the spec requires, calls DEL, then ADD again.
    let d = req("DEL", "rep0", &c).run(&conf);
    assert!(d.ok, "{}", d.out);
    assert!(host_veths(&s).is_empty() && !has_link(&c, "eth0"));
    let r = req("ADD", "rep0", &c).run(&conf);
    assert!(r.ok, "{}", r.out);
    assert!(net::ping(&s.host, "10.74.0.2", 1));
}

#[test]
fn port_mappings_reach_the_container_from_ext_and_host() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.76.0.0/24", &[]);
    let c = Netns::new(&s.name("c"));
    let rc = json!({"portMappings": [
        {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 15353, "containerPort": 5353, "protocol": "udp", "hostIP": ""},
        {"hostPort": 18443, "containerPort": 80, "protocol": "tcp", "hostIP": UPLINK_IP},
    ]});
    let conf = with(conf(&s, "1.0.0", &n), "runtimeConfig", rc);
    let r = req("ADD", "pm0", &c).run(&conf);
    assert!(r.ok, "{} {}", r.out, r.err);
    let _web = net::http_server(&c, 80, "published");
    let _udp = net::udp_echo(&c, 5353);
    for (from, url) in [
        (&s.ext, format!("http://{UPLINK_IP}:18080/")),
        (&s.ext, format!("http://{UPLINK_IP}:18443/")),
        (&s.host, "http://127.0.0.1:18080/".to_string()),
        (&s.host, format!("http://{UPLINK_IP}:18080/")),
    ] {
        assert_eq!(
            net::curl(from, &url, 5).as_deref(),
            Some("published"),
            "{url} from {}",
            from.name
        );
    }
    assert_eq!(
        net::udp_ask(&s.ext, UPLINK_IP, 15353, "ping", 3).as_deref(),
        Some("ping")
    );
    let ports = s.json(&["ports"]);
    assert_eq!(ports.as_array().unwrap().len(), 3, "{ports}");
    // Only on the address asked for.
    assert!(net::curl(&s.host, "http://127.0.0.1:18443/", 2).is_none());

    // CHECK looks at the published ports too.
    let check = with(conf.clone(), "prevResult", r.out.clone());
    assert!(req("CHECK", "pm0", &c).run(&check).ok);
    s.ok(&[
        "unpublish",
        listed(&s, &c).unwrap()["name"].as_str().unwrap(),
        "18080",
    ]);
    let m = assert_error(&req("CHECK", "pm0", &c).run(&check), 1002, "1.0.0");
    assert!(m.contains("18080"), "{m}");

    assert_eq!(map_entries(&s, "WEIR_PUBLISH"), 2);
    assert!(req("DEL", "pm0", &c).run(&check).ok);
    assert_eq!(s.json(&["ports"]), json!([]));
    assert_eq!(map_entries(&s, "WEIR_PUBLISH"), 0);
    assert!(net::curl(&s.ext, &format!("http://{UPLINK_IP}:18443/"), 2).is_none());
}

#[test]
fn policy_and_inspection_treat_cni_containers_like_others() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.77.0.0/24", &[]);
    let c = Netns::new(&s.name("c"));
    let conf = conf(&s, "1.0.0", &n);
    // Podman passes the container name as K8S_POD_NAME; a fixed MAC and IP as MAC= / IP=.
    let pod = s.name("web");
    let args = format!("IgnoreUnknown=1;K8S_POD_NAME={pod};IP=10.77.0.9;MAC=02:aa:bb:cc:dd:09");
    let r = Req {
        args: &args,
        ..req("ADD", "pol0", &c)
    }
    .run(&conf);
    assert!(r.ok, "{}", r.out);
    assert_eq!(r.out["ips"][0]["address"], "10.77.0.9/24");
    assert_eq!(r.out["interfaces"][1]["mac"], "02:aa:bb:cc:dd:09");
    assert!(
        c.must(&["ip", "link", "show", "eth0"])
            .contains("02:aa:bb:cc:dd:09")
    );
    let entry = listed(&s, &c).unwrap();
    assert_eq!(entry["name"], pod.as_str());
    // The same pod name again (another namespace of Kubernetes): a name from the id instead.
    let c2 = Netns::new(&s.name("c2"));
    let r2 = Req {
        args: &args.replace(";IP=10.77.0.9;MAC=02:aa:bb:cc:dd:09", ""),
        ..req("ADD", "pol1", &c2)
    }
    .run(&conf);
    assert!(r2.ok, "{}", r2.out);
    assert_eq!(listed(&s, &c2).unwrap()["name"], "cni-pol1");

    // A `control container create` container and the CNI one talk; rules by name apply.
    let b = s.container("b", &n, &[]);
    let _web = net::http_server(&c, 80, "cni-web");
    assert_eq!(
        net::curl(&b, "http://10.77.0.9/", 5).as_deref(),
        Some("cni-web")
    );
    assert!(s.path_packets("container-to-container") > 0);
    let flows = s.json(&["conntrack"]);
    assert!(
        flows.to_string().contains("10.77.0.9"),
        "conntrack: {flows}"
    );
    s.ok(&["isolate", &pod, &b.name]);
    assert!(net::curl(&b, "http://10.77.0.9/", 2).is_none());
    assert!(s.drops("policy-denied") > 0);
    s.ok(&["unisolate", &pod, &b.name]);
    assert_eq!(
        net::curl(&b, "http://10.77.0.9/", 5).as_deref(),
        Some("cni-web")
    );
    // Rules naming a CNI container go with it on DEL.
    s.ok(&["isolate", &pod]);
    let policy_with_rule = map_entries(&s, "WEIR_POLICY");
    s.ok(&["unisolate", &pod]);
    let policy_without = map_entries(&s, "WEIR_POLICY");
    assert!(
        policy_with_rule > policy_without,
        "isolate wrote no policy entry"
    );
    s.ok(&["isolate", &pod]);
    assert!(req("DEL", "pol0", &c).run(&conf).ok);
    assert_eq!(s.json(&["rules"]), json!([]));
    assert_eq!(map_entries(&s, "WEIR_POLICY"), policy_without);
    assert_eq!(s.json(&["status"])["problems"], json!([]));
}

#[test]
fn status_and_gc() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.78.0.0/30", &[]);
    let conf = conf(&s, "1.1.0", &n);
    let status = |c: &Value| {
        call(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")],
            &c.to_string(),
        )
    };
    let st = status(&conf);
    assert!(st.ok && st.out.is_null(), "{}", st.out);
    assert_error(
        &status(&with(conf.clone(), "network", json!("nope"))),
        50,
        "1.1.0",
    );

    // A /30 holds one container besides the gateway.
    let a = Netns::new(&s.name("a"));
    assert!(req("ADD", "gc-a", &a).run(&conf).ok);
    assert_error(&status(&conf), 50, "1.1.0");
    let b = Netns::new(&s.name("b"));
    assert_error(&req("ADD", "gc-b", &b).run(&conf), 1001, "1.1.0");

    let n2 = s.network("m", "10.79.0.0/24", &[]);
    let conf2 = self::conf(&s, "1.1.0", &n2);
    let keep = Netns::new(&s.name("k"));
    assert!(req("ADD", "gc-keep", &keep).run(&conf2).ok);
    assert!(req("ADD", "gc-b", &b).run(&conf2).ok);
    let mine = s.container("own", &n2, &[]);
    let gc = |c: &Value, valid: Value| {
        call(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
            &with(c.clone(), "cni.dev/valid-attachments", valid).to_string(),
        )
    };
    assert_error(
        &call(&[("CNI_COMMAND", "GC")], &conf2.to_string()),
        7,
        "1.1.0",
    );
    let r = gc(
        &conf2,
        json!([{"containerID": "gc-keep", "ifname": "eth0"}]),
    );
    assert!(r.ok, "{}", r.out);
    assert!(has_link(&keep, "eth0") && !has_link(&b, "eth0"));
    assert!(
        has_link(&mine, "eth0"),
        "GC must not touch `control container create` containers"
    );
    // GC is per network: the attachment on the first network is untouched.
    assert!(has_link(&a, "eth0"));
    let names: Vec<String> = s
        .json(&["container", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn concurrent_adds_and_dels_serialise() {
    // A runtime starting a batch of containers runs its plugins in parallel.
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.82.0.0/24", &[]);
    let conf = conf(&s, "1.0.0", &n);
    let nss: Vec<Netns> = (0..6)
        .map(|i| Netns::new(&s.name(&format!("p{i}"))))
        .collect();
    let run_all = |cmd: &'static str| -> Vec<Reply> {
        std::thread::scope(|sc| {
            let hs: Vec<_> = nss
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let conf = &conf;
                    sc.spawn(move || req(cmd, &format!("par{i}"), ns).run(conf))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let added = run_all("ADD");
    let mut ips: Vec<String> = added
        .iter()
        .map(|r| {
            assert!(r.ok, "{} {}", r.out, r.err);
            r.out["ips"][0]["address"].as_str().unwrap().to_string()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(
        ips.len(),
        nss.len(),
        "an address was handed out twice: {ips:?}"
    );
    assert_eq!(s.json(&["container", "ls"]).as_array().unwrap().len(), 6);
    // The first and the last one talk.
    let first = added[0].out["ips"][0]["address"].as_str().unwrap();
    let url = format!("http://{}/", first.split('/').next().unwrap());
    let _web = net::http_server(&nss[0], 80, "first");
    assert_eq!(net::curl(&nss[5], &url, 5).as_deref(), Some("first"));
    for r in run_all("DEL") {
        assert!(r.ok, "{} {}", r.out, r.err);
    }
    assert_eq!(s.json(&["container", "ls"]), json!([]));
    assert!(host_veths(&s).is_empty());
    assert_eq!(map_entries(&s, "WEIR_ENDPOINTS"), 0);
}

#[test]
fn a_held_lock_answers_try_again_later() {
    use std::os::fd::AsRawFd;
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.81.0.0/24", &[]);
    let c = Netns::new(&s.name("c"));
    let conf = with(conf(&s, "1.0.0", &n), "busyTimeout", json!(0.5));
    // A `control` command stuck while holding the instance lock.
    let held = std::fs::File::open(s.state_dir.join("lock")).unwrap();
    // SAFETY: flock on a valid fd; released when `held` is dropped.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let t = std::time::Instant::now();
    let m = assert_error(&req("ADD", "busy0", &c).run(&conf), 11, "1.0.0");
    assert!(m.contains("busyTimeout"), "{m}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert_error(&req("DEL", "busy0", &c).run(&conf), 11, "1.0.0");
    assert!(!has_link(&c, "eth0") && host_veths(&s).is_empty());
    drop(held);
    let r = req("ADD", "busy0", &c).run(&conf);
    assert!(r.ok, "{} {}", r.out, r.err);
    assert!(req("DEL", "busy0", &c).run(&conf).ok);
}

#[test]
fn down_leaves_runtime_namespaces_and_del_still_succeeds() {
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("n", "10.80.0.0/24", &[]);
    let c = Netns::new(&s.name("c"));
    let conf = conf(&s, "1.0.0", &n);
    assert!(req("ADD", "down0", &c).run(&conf).ok);

    // Weir's host namespace vanished (stand-in: the state names one that does not exist):
    // DEL has nothing it could release and succeeds rather than wedging the runtime.
    {
        let state = s.state_dir.join("state.json");
        let _restore = RestoreOnDrop(state.clone(), std::fs::read(&state).unwrap());
        let mut st: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(st["host_netns"], s.host.name.as_str(), "{st}");
        st["host_netns"] = json!(rig::unique("gone"));
        std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
        let d = req("DEL", "down0", &c).run(&conf);
        assert!(d.ok && d.err.contains("is gone"), "{} {}", d.out, d.err);
        // ...while ADD says what is wrong.
        let m = assert_error(&req("ADD", "down1", &c).run(&conf), 999, "1.0.0");
        assert!(m.contains("host namespace is missing"), "{m}");
    }
    assert!(has_link(&c, "eth0"), "nothing was touched");

    s.ok(&["down"]);
    assert!(c.path().exists(), "down deleted the runtime's namespace");
    assert!(!has_link(&c, "eth0"));
    // The runtime's DEL after Weir is gone: nothing to release, success.
    assert!(req("DEL", "down0", &c).run(&conf).ok);
}
