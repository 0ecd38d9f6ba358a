//! What the CNI tests share beyond `rig`.

/// The `control` binary, built for these tests (see [`rig::control_binary`]).
pub fn control() -> &'static str {
    rig::control_binary()
}
