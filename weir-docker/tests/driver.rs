//! The driver under a real dockerd (Debian's docker.io, in the sandbox's host namespace with
//! its own roots and no iptables, bridge or forwarding): `docker network create -d`, `docker
//! run --network` and `-p` on Weir's datapath, and what Docker shows when Weir refuses.

mod support;

use std::time::Duration;

use rig::{EXT_IP, Sandbox, UPLINK_IP, docker::Dockerd, net, text};
use support::*;

#[test]
fn docker_containers_run_on_a_weir_network() {
    let (s, d, drv, image) = docker_on_weir(&[]);
    let net_id = d.must(&words(&format!(
        "network create -d {} --subnet 10.77.0.0/24 web",
        drv.name
    )));
    let weir_net = format!("docker-{}", &net_id[..12]);
    let nets = s.json(&["network", "ls"]);
    let n = nets
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == weir_net.as_str());
    assert_eq!(
        n.expect("a Weir network")["subnet"],
        "10.77.0.0/24",
        "{nets}"
    );

    let serve = "echo served by web1 > /www/index.html && httpd -f -p 80 -h /www";
    d.must(&[
        "run",
        "-d",
        "--name",
        "web1",
        "--network",
        "web",
        "-p",
        "8080:80",
        image,
        "sh",
        "-c",
        serve,
    ]);
    d.must(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "web",
        image,
        "sleep",
        "600",
    ]);
    let (w1, c2) = (
        weir_container(&s, &d, "web1", "web"),
        weir_container(&s, &d, "c2", "web"),
    );
    let ip1 = w1["ip"].as_str().unwrap().to_string();
    let docker_ip = d.must(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.web.IPAddress}}",
        "web1",
    ]);
    assert_eq!(ip1, docker_ip, "Weir and Docker agree on the address");
    assert_eq!(w1["published"], serde_json::json!(["8080->80/tcp"]), "{w1}");
    // Docker set the MAC Weir chose (the one anti-spoofing checks).
    let mac = d.must(&["exec", "c2", "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(mac, c2["mac"].as_str().unwrap());

    let url = format!("http://{UPLINK_IP}:8080/");
    reach_each_other_and_the_world(&s, &d, &ip1, &url);
    only_weirs_datapath(&s);

    // Removal leaves nothing: no container, port, veth or network.
    d.must(&["rm", "-f", "web1", "c2"]);
    nothing_left(&s, &url);
    d.must(&["network", "rm", "web"]);
    assert_eq!(s.json(&["network", "ls"]), serde_json::json!([]));
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}

/// c2 reaches web1 (at `ip1`, serving its page on 80, published at `url`) by address and by
/// name; ext, the host and c2 (hairpin) reach the published port; c2 reaches ext.
fn reach_each_other_and_the_world(s: &Sandbox, d: &Dockerd, ip1: &str, url: &str) {
    // Container to container: ping and TCP, by address and by name (Docker's DNS).
    assert!(
        d.docker(&["exec", "c2", "ping", "-c", "1", "-W", "2", ip1])
            .status
            .success()
    );
    let page = "served by web1\n";
    assert!(
        rig::wait_for(Duration::from_secs(10), || {
            wget(d, "c2", &format!("http://{ip1}/")).is_some()
        }),
        "c2 cannot reach web1's httpd"
    );
    assert_eq!(
        wget(d, "c2", "http://web1/").as_deref(),
        Some(page),
        "by name"
    );
    // The published port: from ext, from the host (uplink address, loopback), and hairpin.
    assert_eq!(net::curl(&s.ext, url, 5).as_deref(), Some(page));
    assert_eq!(net::curl(&s.host, url, 5).as_deref(), Some(page));
    assert_eq!(
        net::curl(&s.host, "http://127.0.0.1:8080/", 5).as_deref(),
        Some(page)
    );
    assert_eq!(wget(d, "c2", url).as_deref(), Some(page), "hairpin");
    // Out to the world through MASQUERADE.
    assert!(
        d.docker(&["exec", "c2", "ping", "-c", "1", "-W", "2", EXT_IP])
            .status
            .success()
    );
}

/// Weir's datapath did it: no bridge, no netfilter rule, no docker-proxy.
fn only_weirs_datapath(s: &Sandbox) {
    assert!(s.path_packets("container-to-container") > 0);
    assert!(s.path_packets("published-in") > 0);
    let bridges = s.host.must(&["ip", "-o", "link", "show", "type", "bridge"]);
    assert!(bridges.trim().is_empty(), "{bridges}");
    let rules = text(&s.host.run(&["nft", "list", "ruleset"]).stdout);
    assert!(
        !rules.contains("chain"),
        "netfilter rules in the host namespace: {rules}"
    );
    let proxies = text(&rig::run(&["pgrep", "-f", "docker-proxy"]).stdout);
    assert!(proxies.trim().is_empty(), "docker-proxy running: {proxies}");
}

#[test]
fn what_weir_refuses_docker_shows() {
    let (s, d, drv, image) = docker_on_weir(&[]);
    let e = d.fails(&words(&format!(
        "network create -d {} --ipv6 --subnet 10.76.0.0/24 --gateway 10.76.0.1 --subnet fd77::/64 --gateway fd77::fe v6",
        drv.name
    )));
    assert!(e.contains("IPv6 gateway is fd77::1"), "{e}");
    let e = d.fails(&words(&format!(
        "network create -d {} --subnet 10.78.0.0/24 -o foo=bar o",
        drv.name
    )));
    assert!(e.contains("\"foo\""), "{e}");
    d.must(&words(&format!(
        "network create -d {} --subnet 10.78.0.0/24 ok",
        drv.name
    )));
    let e = d.fails(&[
        "run",
        "--rm",
        "--network",
        "ok",
        "-p",
        "6000:60/sctp",
        image,
        "true",
    ]);
    assert!(e.contains("60/sctp"), "{e}");
    // Nothing of the refused container is left.
    assert_eq!(s.json(&["container", "ls"]), serde_json::json!([]));
    assert_eq!(s.json(&["ports"]), serde_json::json!([]));
    // Bad requests on the socket itself: an error reply, never a crash.
    let r = drv.call("NetworkDriver.CreateNetwork", "{not json");
    assert!(
        r["Err"].as_str().unwrap().contains("not the JSON expected"),
        "{r}"
    );
    let r = drv.call(
        "NetworkDriver.CreateEndpoint",
        r#"{"NetworkID":"00000000000000000000","EndpointID":"1111111111111111","Interface":{"Address":"10.9.0.2/24"}}"#,
    );
    assert!(
        r["Err"].as_str().unwrap().contains("no network named"),
        "{r}"
    );
    let r = drv.call("NetworkDriver.Frobnicate", "{}");
    assert!(r["Err"].as_str().is_some(), "{r}");
    assert_eq!(
        drv.call("Plugin.Activate", "")["Implements"][0],
        "NetworkDriver"
    );
    d.must(&["network", "rm", "ok"]);
}

#[test]
fn docker_port_forms_addresses_and_a_driver_restart() {
    let (s, d, mut drv, image) = docker_on_weir(&[]);
    let create = format!("network create -d {} --subnet 10.79.0.0/24 n", drv.name);
    d.must(&words(&create));
    let serve = "echo e1 > /www/index.html && httpd -p 80 -h /www && nc -ll -p 81 -e cat";
    let e1 = "run -d --name e1 --network n --ip 10.79.0.50 --mac-address 02:42:0a:4f:00:32 \
              -p 9000-9002:81 -p 80";
    d.must(&[&words(e1)[..], &[image, "sh", "-c", serve]].concat());
    let e2 = "run -d --name e2 --network n -p 9000-9002:81 -p 127.0.0.1:5353:53/udp";
    d.must(&[&words(e2)[..], &[image], &words(ECHO)[..]].concat());
    let e1 = weir_container(&s, &d, "e1", "n");
    assert_eq!(
        (e1["ip"].as_str(), e1["mac"].as_str()),
        (Some("10.79.0.50"), Some("02:42:0a:4f:00:32"))
    );
    // A range takes its first free port; no host port takes one from the ephemeral range.
    let p1 = published(&e1);
    assert!(p1.contains(&"9000->81/tcp".to_string()), "{p1:?}");
    let ephemeral: u16 = p1
        .iter()
        .find_map(|p| p.strip_suffix("->80/tcp")?.parse().ok())
        .unwrap_or_else(|| panic!("no host port for 80: {p1:?}"));
    let (lo, hi) = net::ephemeral_ports(&s.host);
    assert!(
        (lo..=hi).contains(&ephemeral),
        "{ephemeral} outside {lo}-{hi}"
    );
    let e2 = weir_container(&s, &d, "e2", "n");
    let mut p2 = published(&e2);
    p2.sort();
    assert_eq!(p2, ["127.0.0.1:5353->53/udp", "9001->81/tcp"]);
    let page = net::curl(&s.ext, &format!("http://{UPLINK_IP}:{ephemeral}/"), 5);
    assert_eq!(page.as_deref(), Some("e1\n"));
    assert!(echo_once(&s.ext, UPLINK_IP, 9001), "e2's range port");
    restart_under_load(&s, &d, &mut drv, image);
    connect_and_disconnect(&s, &d, &drv.name);
    d.must(&["rm", "-f", "e1", "e2", "e3"]);
    nothing_left(&s, &format!("http://{UPLINK_IP}:{ephemeral}/"));
    d.must(&["network", "rm", "n", "n2"]);
    assert_eq!(s.json(&["network", "ls"]), serde_json::json!([]));
}

/// A session through e1's published 9000 from ext: e1 sees ext's own address; the driver is
/// killed and the session, new connections and published ports carry on; restarted, it
/// serves new containers and removes old ones from Weir's state alone. No reset anywhere.
fn restart_under_load(s: &Sandbox, d: &Dockerd, drv: &mut Driver, image: &str) {
    let session = s
        .ext
        .spawn_piped(&["python3", "-c", SESSION, UPLINK_IP, "9000", "8"]);
    assert!(
        rig::wait_for(Duration::from_secs(5), || {
            d.must(&["exec", "e1", "netstat", "-tn"])
                .contains(&format!("{EXT_IP}:"))
        }),
        "e1 does not see ext's address: {}",
        d.must(&["exec", "e1", "netstat", "-tn"])
    );
    drv.kill();
    assert!(echo_once(&s.ext, UPLINK_IP, 9001), "with the driver down");
    assert!(
        d.docker(&["exec", "e1", "ping", "-c", "1", "-W", "2", EXT_IP])
            .status
            .success()
    );
    drv.restart();
    let e3 = "run -d --name e3 --network n -p 9002:81";
    d.must(&[&words(e3)[..], &[image], &words(ECHO)[..]].concat());
    assert!(
        echo_once(&s.ext, UPLINK_IP, 9002),
        "a container run after the restart"
    );
    let out = session.finish_within(Duration::from_secs(20));
    assert!(
        out.status.success(),
        "the session broke: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).trim().parse::<u32>().unwrap() > 50,
        "{}",
        text(&out.stdout)
    );
    assert_eq!(net::nstat(&s.ext, "TcpEstabResets"), 0);
    d.must(&["rm", "-f", "e2"]);
    assert!(!echo_once(&s.ext, UPLINK_IP, 9001), "e2's port outlived it");
    let ports = s.json(&["ports"]).to_string();
    assert!(
        !ports.contains("9001") && !ports.contains("5353"),
        "{ports}"
    );
}

/// `docker network connect` gives a running container a second interface, a second Weir
/// container in the same namespace, anti-spoofed on its own; disconnect removes it alone.
fn connect_and_disconnect(s: &Sandbox, d: &Dockerd, driver: &str) {
    d.must(&[
        "network",
        "create",
        "-d",
        driver,
        "--subnet",
        "10.81.0.0/24",
        "n2",
    ]);
    d.must(&["network", "connect", "n2", "e1"]);
    let second = weir_container(s, d, "e1", "n2");
    let ip = second["ip"].as_str().unwrap();
    let addrs = d.must(&["exec", "e1", "ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains(&format!("{ip}/24")) && addrs.contains("10.79.0.50/24"),
        "{addrs}"
    );
    assert!(
        d.docker(&["exec", "e1", "ping", "-c", "1", "-W", "2", "10.81.0.1"])
            .status
            .success()
    );
    assert!(
        d.docker(&["exec", "e1", "ping", "-c", "1", "-W", "2", "10.79.0.1"])
            .status
            .success()
    );
    d.must(&["network", "disconnect", "n2", "e1"]);
    let left = s.json(&["container", "ls"]).to_string();
    assert!(!left.contains(ip), "{left}");
    assert!(
        d.docker(&["exec", "e1", "ping", "-c", "1", "-W", "2", "10.79.0.1"])
            .status
            .success()
    );
}

/// dockerd stopped and started again with `--live-restore`: the container serves throughout
/// (the datapath needs neither dockerd nor the driver), and is removed cleanly afterwards.
#[test]
fn live_restore_keeps_containers_serving() {
    let (s, mut d, drv, image) = docker_on_weir(&["--live-restore"]);
    d.must(&words(&format!(
        "network create -d {} --subnet 10.82.0.0/24 lr",
        drv.name
    )));
    let run = "run -d --name lr1 --network lr -p 8090:81";
    d.must(&[&words(run)[..], &[image], &words(ECHO)[..]].concat());
    assert!(echo_once(&s.ext, UPLINK_IP, 8090), "before the restart");
    let session = s
        .ext
        .spawn_piped(&["python3", "-c", SESSION, UPLINK_IP, "8090", "6"]);
    d.stop();
    assert!(echo_once(&s.ext, UPLINK_IP, 8090), "with dockerd stopped");
    d.start_again();
    assert_eq!(
        d.must(&["inspect", "--format", "{{.State.Running}}", "lr1"]),
        "true"
    );
    let out = session.finish_within(Duration::from_secs(20));
    assert!(
        out.status.success(),
        "the session broke: {}",
        text(&out.stderr)
    );
    assert_eq!(net::nstat(&s.ext, "TcpEstabResets"), 0);
    assert!(echo_once(&s.ext, UPLINK_IP, 8090), "after the restart");
    d.must(&["rm", "-f", "lr1"]);
    nothing_left(&s, &format!("http://{UPLINK_IP}:8090/"));
    d.must(&["network", "rm", "lr"]);
}

#[test]
fn docker_dual_stack_networks() {
    let (s, d, drv, image) = docker_on_dual_stack_weir();
    d.must(&words(&format!(
        "network create -d {} --ipv6 --subnet 10.79.0.0/24 --subnet fd79::/64 dual",
        drv.name
    )));
    let serve = "echo served over v6 > /www/index.html && httpd -f -p 80 -h /www";
    d.must(&[
        "run",
        "-d",
        "--name",
        "web6",
        "--network",
        "dual",
        "-p",
        "8090:80",
        "-p",
        "[::1]:8091:80",
        "-p",
        &format!("[{}]:8092:80", rig::UPLINK_IP6),
        image,
        "sh",
        "-c",
        serve,
    ]);
    let w = weir_container(&s, &d, "web6", "dual");
    let ip6 = w["ip6"].as_str().expect("an IPv6 address").to_string();
    assert!(ip6.starts_with("fd79::"), "{w}");
    // Docker configured the interface it moved: the address and the default route via
    // Weir's gateway.
    let inside = d.must(&["exec", "web6", "ip", "-6", "route"]);
    assert!(inside.contains("default via fd79::1"), "{inside}");
    // The host reaches it, and the world through the published port on the host's IPv6.
    let direct = format!("http://[{ip6}]:80/");
    assert_eq!(
        net::curl(&s.host, &direct, 5).as_deref(),
        Some("served over v6\n")
    );
    let url = format!("http://[{}]:8090/", rig::UPLINK_IP6);
    assert_eq!(
        net::curl(&s.ext, &url, 5).as_deref(),
        Some("served over v6\n")
    );
    // IPv6 host addresses in -p: loopback from the host, the uplink's from the world, and
    // only there.
    let on = |ns: &rig::Netns, url: &str| net::curl(ns, url, 3);
    assert_eq!(
        on(&s.host, "http://[::1]:8091/").as_deref(),
        Some("served over v6\n")
    );
    let one = format!("http://[{}]:8092/", rig::UPLINK_IP6);
    assert_eq!(on(&s.ext, &one).as_deref(), Some("served over v6\n"));
    assert!(on(&s.ext, &format!("http://{UPLINK_IP}:8092/")).is_none());
    assert!(on(&s.ext, &format!("http://[{}]:8091/", rig::UPLINK_IP6)).is_none());
    let e = d.fails(&[
        "run",
        "--rm",
        "--network",
        "dual",
        "-p",
        "[::]:8093:80",
        image,
        "true",
    ]);
    assert!(e.contains("[::]:8093"), "{e}");
    d.must(&["rm", "-f", "web6"]);
    d.must(&["network", "rm", "dual"]);
    assert_eq!(s.json(&["container", "ls"]), serde_json::json!([]));
}

/// `-o` options: the MTU Docker users set for an encapsulating upstream, and isolation of
/// the network's members (Weir's `weir.isolated` or the bridge driver's `enable_icc=false`).
#[test]
fn docker_network_options_mtu_and_isolation() {
    let (s, d, drv, image) = docker_on_weir(&[]);
    for (net, opt, subnet) in [
        ("iso", "weir.isolated=true", "10.75.0.0/24"),
        (
            "noicc",
            "com.docker.network.bridge.enable_icc=false",
            "10.75.1.0/24",
        ),
    ] {
        d.must(&words(&format!(
            "network create -d {} --subnet {subnet} -o com.docker.network.driver.mtu=1400 -o {opt} {net}",
            drv.name
        )));
        let serve = "echo hi > /www/index.html && httpd -f -p 80 -h /www";
        let (a, b) = (format!("{net}-a"), format!("{net}-b"));
        d.must(&[
            "run",
            "-d",
            "--name",
            &a,
            "--network",
            net,
            image,
            "sleep",
            "600",
        ]);
        d.must(&[
            "run",
            "-d",
            "--name",
            &b,
            "--network",
            net,
            image,
            "sh",
            "-c",
            serve,
        ]);
        let mtu = d.must(&["exec", &a, "cat", "/sys/class/net/eth0/mtu"]);
        assert_eq!(mtu.trim(), "1400", "{net}");
        let bip = weir_container(&s, &d, &b, net)["ip"]
            .as_str()
            .unwrap()
            .to_string();
        let url = format!("http://{bip}/");
        assert_eq!(
            net::curl(&s.host, &url, 5).as_deref(),
            Some("hi\n"),
            "{net}"
        );
        assert!(
            wget(&d, &a, &url).is_none(),
            "{net}: members reached each other"
        );
        // By Docker name, a rule opens it.
        s.ok(&["allow", &a, &b]);
        assert_eq!(wget(&d, &a, &url).as_deref(), Some("hi\n"), "{net}");
        d.must(&["rm", "-f", &a, &b]);
        d.must(&["network", "rm", net]);
    }
    for (bad, says) in [
        ("com.docker.network.driver.mtu=9000", "above the uplink's"),
        ("com.docker.network.driver.mtu=lots", "in bytes"),
        ("weir.isolated=maybe", "true or false"),
        ("com.docker.network.bridge.name=br9", "does not know"),
    ] {
        let e = d.fails(&words(&format!(
            "network create -d {} --subnet 10.75.2.0/24 -o {bad} bad",
            drv.name
        )));
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert_eq!(s.json(&["network", "ls"]), serde_json::json!([]));
}
