//! SNAT source-port selection. The datapath first keeps the container's own port; on a
//! collision it probes `candidate(seed, 1..)` inside the configured range, inserting the
//! reply entry with BPF_NOEXIST each time (Cilium's nat.h does the same).

/// Probes after the original port before giving up and counting an allocation failure.
pub const SNAT_RETRIES: u32 = 32;

/// The host-order port to try on probe `attempt` (>= 1) with a per-flow random `seed`,
/// always inside `[min, max]`. Probe k is `seed + k * STRIDE` modulo the range size: STRIDE is
/// a prime above 65,536, so it is coprime with every possible range size and the probes of one
/// allocation never repeat a port before the whole range has been tried, while consecutive
/// probes land far apart (no clustering behind ports already taken). The sum is computed in 64
/// bits: wrapping at 2^32 would break the arithmetic for every range size that is not a power
/// of two.
#[inline(always)]
pub const fn candidate(seed: u32, attempt: u32, min: u16, max: u16) -> u16 {
    let (lo, hi) = if min <= max {
        (min as u64, max as u64)
    } else {
        (max as u64, min as u64)
    };
    let range = hi - lo + 1;
    let x = seed as u64 + attempt as u64 * STRIDE;
    // checked_rem: no panic path in eBPF (range is never 0).
    let off = match x.checked_rem(range) {
        Some(o) => o,
        None => 0,
    };
    (lo + off) as u16
}

/// Knuth's multiplicative-hashing prime (2^32 / golden ratio), larger than any range size.
const STRIDE: u64 = 2_654_435_761;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn always_in_range(seed in any::<u32>(), attempt in 1u32..10_000, a in any::<u16>(), b in any::<u16>()) {
            let p = candidate(seed, attempt, a, b);
            prop_assert!(p >= a.min(b) && p <= a.max(b));
        }

        /// Reference: a straightforward scan finds a free port whenever one exists; the probe
        /// sequence must find one too within SNAT_RETRIES whenever the range is small enough
        /// for the retries to cover it, whatever its size and whichever ports are taken.
        #[test]
        fn finds_free_ports(seed in any::<u32>(), size in 1u16..=(SNAT_RETRIES as u16), used in proptest::collection::btree_set(0u16..32, 0..32)) {
            let (min, max) = (40000u16, 40000 + size - 1);
            let taken = |p: u16| used.contains(&(p - min));
            let free_exists = (min..=max).any(|p| !taken(p));
            let found = (1..=SNAT_RETRIES).any(|a| !taken(candidate(seed, a, min, max)));
            prop_assert_eq!(free_exists, found);
        }
    }

    proptest! {
        /// The probes of one allocation are pairwise distinct for every range size (up to the
        /// size itself): no retry is wasted on a port already tried.
        #[test]
        fn probes_are_distinct(seed in any::<u32>(), min in any::<u16>(), size in 1u32..=65536) {
            let max = (min as u32 + size - 1).min(65535) as u16;
            let size = (max - min) as u32 + 1;
            let mut seen = std::collections::HashSet::new();
            for a in 1..=SNAT_RETRIES.min(size) {
                prop_assert!(seen.insert(candidate(seed, a, min, max)), "repeat at probe {a} of range {min}-{max}");
            }
        }

        /// A range given the wrong way round (`--snat-ports 61000-32768`) is the same range.
        #[test]
        fn bounds_in_either_order(seed in any::<u32>(), attempt in any::<u32>(), a in any::<u16>(), b in any::<u16>()) {
            prop_assert_eq!(candidate(seed, attempt, a, b), candidate(seed, attempt, b, a));
        }
    }

    #[test]
    fn single_port_range() {
        assert_eq!(candidate(12345, 7, 5000, 5000), 5000);
    }
}
