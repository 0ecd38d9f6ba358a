//! Every malformed or conflicting command on a live host fails with one line on stderr and a
//! non-zero exit, and leaves nothing behind: the listings, the kernel objects and the maps are
//! exactly as before. Undoing what is not there, or adding what is, succeeds and changes
//! nothing. Rows are command lines split at spaces; `$name` words are filled in per sandbox.

use rig::{Bg, Netns, Sandbox, net};

use super::snapshot::{TempFile, changes, one_error_line, raw, snapshot};
use crate::{CONTROL, expand};

/// A bad command and a fragment its error message must contain (so the right check fired).
#[rustfmt::skip] // One row a line: a table.
const BAD_INPUT: &[(&str, &str)] = &[
    // Names.
    ("network create a/b --subnet 10.81.0.0/24", "invalid network name"),
    ("network create .. --subnet 10.81.0.0/24", "invalid network name"),
    ("network create ../etc --subnet 10.81.0.0/24", "invalid network name"),
    ("network create $long --subnet 10.81.0.0/24", "invalid network name"),
    ("network create $a_b --subnet 10.81.0.0/24", "invalid network name"),
    ("container create a/b --network $n", "invalid container name"),
    ("container create .. --network $n", "invalid container name"),
    ("container create ../../tmp/x --network $n", "invalid container name"),
    ("container create $long --network $n", "invalid container name"),
    ("container create $empty --network $n", "invalid container name"),
    // Subnets.
    ("network create $x --subnet 10.81.0.0/33", "invalid subnet"),
    ("network create $x --subnet 10.81.0.0", "invalid subnet"),
    ("network create $x --subnet 300.1.1.0/24", "invalid subnet"),
    ("network create $x --subnet banana", "invalid subnet"),
    ("network create $x --subnet 10.81.0.1/24", "did you mean 10.81.0.0/24"),
    ("network create $x --subnet 10.81.0.0/31", "prefix"),
    ("network create $x --subnet 127.0.0.0/8", "not a unicast range"),
    ("network create $x --subnet 224.1.0.0/16", "not a unicast range"),
    ("network create $x --subnet 10.80.0.0/16", "overlaps network"),
    ("network create $x --subnet 10.80.0.128/25", "overlaps network"),
    ("network create $x --subnet 198.18.0.0/24", "overlaps host address"),
    ("network create $x --subnet 198.16.0.0/12", "overlaps host address"),
    ("network create $x --subnet 198.18.0.128/25", "overlaps host address"),
    ("network create $n --subnet 10.82.0.0/24", "already exists"),
    ("network create $n --subnet 10.80.0.0/24 --gateway 10.80.0.9", "already exists with subnet 10.80.0.0/24 gateway 10.80.0.1"),
    // Gateways.
    ("network create $x --subnet 10.81.0.0/24 --gateway 10.82.0.1", "not a host address of 10.81.0.0/24"),
    ("network create $x --subnet 10.81.0.0/24 --gateway 10.81.0.255", "not a host address"),
    ("network create $x --subnet 10.81.0.0/24 --gateway 10.81.0.0", "not a host address"),
    ("network create $x --subnet 10.81.0.0/24 --gateway banana", "invalid gateway"),
    // Networks.
    ("network rm $n", "still has 2 container(s)"),
    ("network rm no-such-net", "no network named"),
    ("network connect $n no-such-net", "no network named"),
    ("network connect $n $n", "same network"),
    // Containers.
    ("container create $x --network no-such-net", "no network named"),
    ("container create $a --network $n", "already exists"),
    ("container create $ext --network $n", "namespace"),
    ("container create $x --network $n --ip 10.80.9.5", "outside network"),
    ("container create $x --network $n --ip $aip", "already used by container"),
    ("container create $x --network $n --ip 10.80.0.1", "gateway"),
    ("container create $x --network $n --ip 10.80.0.255", "broadcast"),
    ("container create $x --network $n --ip 10.80.0.0", "network, broadcast"),
    ("container create $x --network $n --ip 10.80.0.300", "invalid address"),
    ("container rm no-such-container", "no container named"),
    // Ports (including a container create that must roll back after plumbing).
    ("container create $x --network $n --publish 0:80", "invalid host port"),
    ("container create $x --network $n --publish 70000:80", "invalid host port"),
    ("container create $x --network $n --publish 8080:80", "already published"),
    ("container create $x --network $n --publish 9001:80 --publish 9001:81", "given twice"),
    ("container create $x --network $n --publish 9500:80", "in use"),
    ("container create $x --network $other --publish 9002", "invalid port mapping"),
    ("publish $a 0:80", "invalid host port"),
    ("publish $a 8081:0", "invalid container port"),
    ("publish $a 8081:70000", "invalid container port"),
    ("publish $a 8081:80/sctp", "invalid protocol"),
    ("publish $a 8080:81", "already published"),
    ("publish $b 8080:80", "already published"),
    ("publish $b 9500:80", "in use"),
    ("publish $b 9003:80 --host-ip 10.9.9.9", "not an address of the host"),
    ("publish $b 9003:80 --host-ip nonsense", "invalid host IP"),
    ("publish no-such-container 9004:80", "no container named"),
    ("unpublish $a 0", "invalid host port"),
    ("unpublish $a 8080/sctp", "invalid protocol"),
    ("unpublish no-such-container 8080", "no container named"),
    // Rules.
    ("isolate no-such-container", "no container named"),
    ("allow $a no-such-container", "no container named"),
    ("allow $a $b --port 0/tcp", "from 1 to 65535"),
    ("allow $a $b --port 80/icmp", "invalid protocol"),
    ("isolate $a $a", "twice"),
    ("rules import /nonexistent/rules", "cannot read rules file"),
    ("rules import $rf", "line 3"),
    ("rules import $rm", "line 4"),
    ("rules import $rp", "line 2"),
    ("rules import $rv", "line 3"),
    ("rules import $rl", "line 3"),
    ("conntrack flush --container no-such-container", "no container named"),
    // Names nothing was ever created with, everywhere a name is looked up ('/', '..',
    // spaces, 300 characters): refused, and no path is built from them.
    ("network create $empty --subnet 10.81.0.0/24", "invalid network name"),
    ("network create .hidden --subnet 10.81.0.0/24", "invalid network name"),
    ("network create $too_long --subnet 10.81.0.0/24", "invalid network name"),
    ("container create $a_b --network $n", "invalid container name"),
    ("container create $too_long --network $n", "invalid container name"),
    ("container create $x --network ../etc", "no network named"),
    ("container create $x --network $long", "no network named"),
    ("container rm a/b", "no container named"),
    ("container rm ..", "no container named"),
    ("container rm ../../tmp/x", "no container named"),
    ("container rm $a_b", "no container named"),
    ("container rm $long", "no container named"),
    ("network rm ../etc", "no network named"),
    ("network rm $a_b", "no network named"),
    ("network rm $long", "no network named"),
    ("network connect $n ..", "no network named"),
    ("network connect a/b $n", "no network named"),
    ("publish ../x 8081:80", "no container named"),
    ("publish $long 8081:80", "no container named"),
    ("unpublish $a_b 8080", "no container named"),
    ("isolate ../x", "no container named"),
    ("isolate $a a/b", "no container named"),
    ("allow $a $long", "no container named"),
    ("allow $a_b $a", "no container named"),
    ("conntrack flush --container ..", "no container named"),
    // Networks: removing one with containers (also connected to another), disconnecting.
    ("network rm $other", "still has 1 container(s)"),
    ("network disconnect $n no-such-net", "no network named"),
    ("network disconnect no-such-net $n", "no network named"),
    ("network disconnect $n $n", "same network"),
    ("network disconnect $n", "required"),
    // Undoing rules: the same checks as making them.
    ("unisolate no-such-container", "no container named"),
    ("unisolate $a no-such-container", "no container named"),
    ("unisolate no-such-container $a", "no container named"),
    ("unisolate $a $a", "twice"),
    ("disallow $a no-such-container", "no container named"),
    ("disallow no-such-container $b", "no container named"),
    ("disallow $a $a", "twice"),
    ("disallow $a", "required"),
    ("disallow $a $b --port 0/tcp", "from 1 to 65535"),
    ("disallow $a $b --port 70000", "from 1 to 65535"),
    ("disallow $a $b --port 443/icmp", "invalid protocol"),
    ("disallow $a $b --port https", "from 1 to 65535"),
    ("disallow $a $b --port=-1/tcp", "from 1 to 65535"),
    ("allow $a $b --port 70000/tcp", "from 1 to 65535"),
    ("allow $a $b --port 0", "from 1 to 65535"),
    ("allow $a", "required"),
    ("unpublish $a 8080 --host-ip nonsense", "invalid host IP"),
    ("unpublish $a 8080 --host-ip 10.80.0.300", "invalid host IP"),
    // Published on every address, so not on this one alone.
    ("unpublish $a 8080 --host-ip $uplink", "without --host-ip"),
    ("unpublish $a 70000", "invalid host port"),
    ("unpublish $a 0/udp", "invalid host port"),
    ("unpublish $a 8080:80", "invalid host port"),
    ("unpublish $a $empty", "invalid host port"),
    // Ports 0 and 70000 everywhere a port is read.
    ("publish $a 70000:80", "invalid host port"),
    ("publish $a 0:0", "invalid host port"),
    ("publish $a 8081:80/", "invalid protocol"),
    ("publish $a 9010-9005:80", "invalid host port range"),
    ("publish $a 9005-x:80", "invalid host port range"),
    ("publish $a 0", "invalid container port"),
    ("publish $a 70000/udp", "invalid container port"),
    ("container create $x --network $n --publish 8081:0", "invalid container port"),
    ("container create $x --network $n --publish 8081:70000", "invalid container port"),
    ("container create $x --network $n --publish 0:0", "invalid host port"),
    // init on the live host: nothing may change, not even the programs.
    ("init --uplink up0 --ct-timeout bogus=5", "unknown conntrack timeout"),
    ("init --uplink up0 --ct-timeout udp", "expected NAME=SECONDS"),
    ("init --uplink up0 --ct-timeout udp=soon", "must be a number"),
    ("init --uplink up0 --ct-timeout udp=0", "out of range"),
    ("init --uplink up0 --snat-ports 5000-4000", "invalid port range"),
    ("init --uplink up0 --snat-ports 0-100", "invalid port"),
    ("init --uplink up0 --snat-ports 1000-70000", "invalid port"),
    ("init --uplink up0 --snat-ports many", "invalid port range"),
    ("init --uplink up0 --snat-ports 50000-61000", "overlaps the host's ephemeral ports"),
    ("init --uplink up0 --conntrack-max 10", "out of range"),
    ("init --uplink up0 --conntrack-max 128", "only after `control down`"),
    ("init --uplink nope0", "no interface"),
    // Usage errors clap catches before anything runs: one line too.
    ("init --conntrack-max lots", "invalid value"),
    ("init --xdp maybe", "invalid value"),
    ("container create $x", "--network"),
    ("network create $x -x", "unexpected argument"),
    ("frobnicate", "unrecognized subcommand"),
    ("monitor --duration 0", "--duration"),
    ("monitor --count some", "invalid value"),
];

/// Commands with nothing to do: success, a confirmation, no change.
#[rustfmt::skip] // One row a line: a table.
const NOTHING_TO_DO: &[(&str, &str)] = &[
    ("unisolate $a $c", "no such rule: isolate"),
    // A prefix of the line `isolate A B` is not the rule `isolate A`.
    ("unisolate $a", "no such rule: isolate"),
    ("disallow $a $b", "no such rule: allow"),
    ("disallow $a $b --port 443/udp", "no such rule: allow"),
    ("isolate $b $a", "rule already present: isolate"),
    ("allow $a $b --port 443/tcp", "rule already present: allow"),
    ("network connect $other $n", "already connected"),
    ("unpublish $a 9999", "is not published: nothing to do"),
    ("unpublish $a 8080/udp", "is not published: nothing to do"),
    // Held by another container: still nothing of this one's to undo, with a note.
    ("unpublish $b 8080", "8080/tcp is not published (it is published on * to"),
    ("unpublish $c 8080", "is not published (it is published on"),
    ("rules import $present", "added 0 rule(s)"),
];

/// A live host with content in every map: a, b (isolated from a, but for 443/tcp) and c on
/// two connected networks, a published port, a host service holding a port, and rule files
/// with one bad line among good, new ones (all or nothing: no rule may be added).
struct LiveHost {
    n: String,
    other: String,
    a: Netns,
    b: Netns,
    c: Netns,
    _held: Bg,
    files: Vec<(&'static str, TempFile)>,
    // Last: dropped after what runs in it.
    s: Sandbox,
}

impl LiveHost {
    fn new() -> Self {
        let s = Sandbox::with_weir(CONTROL, &[]);
        let n = s.network("n", "10.80.0.0/24", &[]);
        let other = s.network("o", "10.80.8.0/24", &[]);
        let a = s.container("a", &n, &["--publish", "8080:80"]);
        let b = s.container("b", &n, &[]);
        // c on a network connected to n: the links map and a second network have content too.
        let c = s.container("c", &other, &[]);
        s.ok(&["network", "connect", &n, &other]);
        s.ok(&["isolate", &a.name, &b.name]);
        s.ok(&["allow", &a.name, &b.name, "--port", "443/tcp"]);
        // A host service holding a port Weir must not steal.
        let held = net::tcp_listener(&s.host, 9500);
        let (an, bn, cn) = (a.name.as_str(), b.name.as_str(), c.name.as_str());
        let files = [
            (
                "rf",
                format!(
                    "isolate {an} {bn}\nallow {an} {bn} --port 80/tcp\nisolate {an} nobody-here\n"
                ),
            ),
            (
                "rm",
                format!(
                    "# new rules first\nisolate {bn} {cn}\nallow {cn} {an} --port 22/tcp\n\
                     isolate {cn} ../etc\nisolate {an}\nallow {an} {cn}\n"
                ),
            ),
            (
                "rp",
                format!("isolate {bn} {cn}\nallow {cn} {an} --port 70000/tcp\n"),
            ),
            (
                "rv",
                format!("isolate {bn} {cn}\nisolate {cn}\nblock {an} {cn}\n"),
            ),
            (
                "rl",
                format!("isolate {bn} {cn}\nallow {an} {cn}\nisolate {cn} {cn}\n"),
            ),
            // Both rules present already.
            (
                "present",
                format!("# both present\nisolate {bn} {an}\nallow {an} {bn} --port 443/tcp\n"),
            ),
        ]
        .map(|(var, content)| (var, TempFile::new(&s, &format!("rules-{var}"), &content)))
        .into();
        Self {
            s,
            n,
            other,
            a,
            b,
            c,
            _held: held,
            files,
        }
    }

    /// The values of the tables' `$name` words.
    fn vars(&self) -> Vec<(&str, String)> {
        let s = &self.s;
        let mut v = vec![
            ("a", self.a.name.clone()),
            ("b", self.b.name.clone()),
            ("c", self.c.name.clone()),
            ("n", self.n.clone()),
            ("other", self.other.clone()),
            ("x", s.name("x")),
            ("aip", s.ip_of(&self.a)),
            ("ext", s.ext.name.clone()),
            ("uplink", rig::UPLINK_IP.to_string()),
            ("long", "x".repeat(300)),
            // One over the limit (63).
            ("too_long", "y".repeat(64)),
            ("a_b", "a b".to_string()),
            ("empty", String::new()),
        ];
        v.extend(self.files.iter().map(|(var, f)| (*var, f.path())));
        v
    }
}

/// Runs every row against `s`, checking one stderr line, the expected message and that
/// nothing changed. Each row is compared with the snapshot taken just before it, so a change
/// is blamed on the command that made it. Returns how many ran.
fn run_bad_input(s: &Sandbox, vars: &[(&str, &str)]) -> usize {
    let mut before = snapshot(s);
    let mut failures = Vec::new();
    for (line, says) in BAD_INPUT {
        let args = expand(line, vars);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = s.fails(&args);
        if !err.to_lowercase().contains(&says.to_lowercase()) {
            failures.push(format!("{args:?}: {err:?} does not mention {says:?}"));
        }
        let after = snapshot(s);
        for change in changes(&before, &after) {
            failures.push(format!("{args:?} changed {change}"));
        }
        before = after;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    BAD_INPUT.len()
}

/// Runs every row of [`NOTHING_TO_DO`]: each succeeds, says so, and changes nothing.
fn run_nothing_to_do(s: &Sandbox, vars: &[(&str, &str)]) {
    let before = snapshot(s);
    for (line, says) in NOTHING_TO_DO {
        let args = expand(line, vars);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = s.ok(&args);
        assert!(
            out.contains(says),
            "{args:?}: {out:?} does not say {says:?}"
        );
        let after = snapshot(s);
        assert!(
            after == before,
            "{args:?} changed {}",
            changes(&before, &after).join("\n")
        );
    }
}

#[test]
fn bad_input_fails_cleanly_on_a_live_host() {
    let h = LiveHost::new();
    let s = &h.s;
    let vars = h.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ran = run_bad_input(s, &vars);
    eprintln!("{ran} bad-input cases on a live host");

    // Another host namespace than the one recorded at init.
    let o = raw(s, &["--host-netns", &s.ext.name], &["network", "ls"]);
    assert!(one_error_line(&o, "wrong --host-netns").contains("serves host namespace"));

    run_nothing_to_do(s, &vars);

    // And everything still works: a pair no rule isolates reaches each other across the
    // connected networks, and the isolated pair is still refused by the datapath.
    let (a, b, c) = (&h.a, &h.b, &h.c);
    let (aip, cip) = (s.ip_of(a), s.ip_of(c));
    assert!(net::ping(b, &cip, 3), "b cannot reach c at {cip}");
    assert!(net::ping(c, &aip, 3), "c cannot reach a at {aip}");
    let denied = s.drops("policy-denied");
    assert!(!net::ping(a, &s.ip_of(b), 1), "isolated a reached b");
    assert!(
        s.drops("policy-denied") > denied,
        "a -> b was not refused by policy"
    );
    assert!(s.ok(&["status"]).contains("healthy"));
    assert!(Netns::borrowed(&s.ext.name).run(&["true"]).status.success());
}
