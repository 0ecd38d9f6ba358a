//! Register-sized returns of the IPv6 programs' sub-functions: a TC verdict, or one of these
//! codes (a `Result` is returned through a pointer, which costs one of the five arguments BPF
//! passes and stack the 512-byte budget cannot spare), with the drop written to `why`.

use weir_common::stats::DropReason;

/// Nothing decided: the caller goes on (no flow matched, nothing to translate).
pub const NO_FLOW: i32 = -1000;
/// Dropped, the reason in `why` (counted by the program's entry, once).
pub const DROPPED: i32 = -1001;

/// The code of `r`, its drop written to `why`.
#[inline(always)]
pub fn code(r: Result<Option<i32>, DropReason>, why: &mut DropReason) -> i32 {
    match r {
        Ok(Some(v)) => v,
        Ok(None) => NO_FLOW,
        Err(d) => {
            *why = d;
            DROPPED
        }
    }
}
