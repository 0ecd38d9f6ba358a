//! The SNAT port range, kept disjoint from the host's ephemeral range.
//!
//! The host's stack picks the source ports of its own connections from
//! `net.ipv4.ip_local_port_range` without seeing Weir's conntrack table. A masqueraded flow on
//! a port it may pick later would take the replies of the host's next flow to the same
//! destination (the kernel's MASQUERADE avoids this because the host's flows share its
//! conntrack). So no masqueraded flow ever holds a port of that range: SNAT picks from a range
//! outside it, and the datapath keeps a container's own port only outside it too.

use crate::error::{Context, Error, Result};

/// A range smaller than this is refused as a default: too few flows per destination.
pub const MIN_DEFAULT_PORTS: u32 = 1024;

/// The lowest port SNAT picks by default: below are the privileged ports.
const FIRST_UNPRIVILEGED: u16 = 1024;

/// Reads the ephemeral range of the calling thread's network namespace.
pub fn host_ephemeral() -> Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let s = std::fs::read_to_string(path).ctx(|| format!("reading {path}"))?;
    parse_range(&s).ok_or_else(|| Error::Other(anyhow::anyhow!("{path} holds {s:?}")))
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Some((a.min(b), a.max(b))),
        _ => None,
    }
}

pub fn overlaps(a: (u16, u16), b: (u16, u16)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

fn size(r: (u16, u16)) -> u32 {
    r.1 as u32 - r.0 as u32 + 1
}

/// The larger of the unprivileged ranges below and above `eph`, if it is big enough.
pub fn default_for(eph: (u16, u16)) -> Option<(u16, u16)> {
    let below = (eph.0 > FIRST_UNPRIVILEGED).then(|| (FIRST_UNPRIVILEGED, eph.0 - 1));
    let above = (eph.1 < u16::MAX).then(|| (eph.1.max(FIRST_UNPRIVILEGED - 1) + 1, u16::MAX));
    [below, above]
        .into_iter()
        .flatten()
        .filter(|r| size(*r) >= MIN_DEFAULT_PORTS)
        .max_by_key(|r| size(*r))
}

/// What `control init` uses: the range given (refused if it overlaps the host's ephemeral
/// ports), else the instance's own if it still does not, else the default for this host.
/// The note says why a kept instance's range moved.
pub fn choose(
    given: Option<(u16, u16)>,
    current: Option<(u16, u16)>,
    eph: (u16, u16),
) -> Result<((u16, u16), Option<String>)> {
    let (lo, hi) = eph;
    if let Some(r) = given {
        if overlaps(r, eph) {
            let hint =
                default_for(eph).map_or(String::new(), |d| format!(", e.g. {}-{}", d.0, d.1));
            return Err(Error::invalid(format!(
                "--snat-ports {}-{} overlaps the host's ephemeral ports {lo}-{hi} (net.ipv4.ip_local_port_range), which its own connections pick from: choose a range outside it{hint}",
                r.0, r.1
            )));
        }
        return Ok((r, None));
    }
    if let Some(r) = current.filter(|r| !overlaps(*r, eph)) {
        return Ok((r, None));
    }
    let d = default_for(eph).ok_or_else(|| {
        Error::invalid(format!(
            "the host's ephemeral ports {lo}-{hi} (net.ipv4.ip_local_port_range) leave no range of {MIN_DEFAULT_PORTS} ports for masquerading: narrow it, or pass --snat-ports MIN-MAX outside it"
        ))
    })?;
    let note = current.map(|c| {
        format!(
            "SNAT ports moved from {}-{} to {}-{}: the old range overlapped the host's ephemeral ports {lo}-{hi}",
            c.0, c.1, d.0, d.1
        )
    });
    Ok((d, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX: (u16, u16) = (32768, 60999);

    #[test]
    fn default_is_the_larger_side() {
        assert_eq!(default_for(LINUX), Some((1024, 32767)));
        assert_eq!(default_for((2000, 10000)), Some((10001, 65535)));
        assert_eq!(default_for((1024, 65535)), None);
        // A side smaller than the minimum is no default.
        assert_eq!(default_for((1500, 65000)), None);
        assert_eq!(default_for((1, 1000)), Some((1024, 65535)));
        for eph in [LINUX, (2000, 10000), (1, 1000), (40000, 40499)] {
            assert!(!overlaps(default_for(eph).unwrap(), eph), "{eph:?}");
        }
    }

    #[test]
    fn a_given_range_must_not_overlap() {
        assert!(choose(Some((40000, 40003)), None, LINUX).is_err());
        assert!(choose(Some((60999, 61010)), None, LINUX).is_err());
        assert_eq!(
            choose(Some((61000, 61003)), None, LINUX).unwrap(),
            ((61000, 61003), None)
        );
    }

    #[test]
    fn an_overlapping_instance_range_moves_with_a_note() {
        // The range earlier releases defaulted to is the host's own ephemeral range.
        let (r, note) = choose(None, Some(LINUX), LINUX).unwrap();
        assert_eq!(r, (1024, 32767));
        assert!(note.unwrap().contains("32768-60999"));
        assert_eq!(
            choose(None, Some((61000, 65000)), LINUX).unwrap(),
            ((61000, 65000), None)
        );
        assert!(choose(None, None, (1024, 65535)).is_err());
    }

    #[test]
    fn parses_the_sysctl() {
        assert_eq!(parse_range("32768\t60999\n"), Some(LINUX));
        assert_eq!(parse_range("61000 32768"), Some((32768, 61000)));
        assert_eq!(parse_range("x"), None);
    }
}
