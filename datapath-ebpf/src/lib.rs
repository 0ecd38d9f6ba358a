#![no_std]
// The programs are the `weir` binary target (src/main.rs); this empty library target only
// lets control/build.rs declare a build-dependency so cargo rebuilds when the crate changes.
