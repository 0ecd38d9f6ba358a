//! Weir's control plane as a library: the `control` binary and the `weir-cni` crate are thin
//! layers over [`ops`], and tests call it directly too.

pub mod book;
pub mod cgroup;
pub mod datapath;
pub mod desired;
pub mod drift;
pub mod error;
pub mod instance;
pub mod ipv6;
pub mod netlink;
pub mod netns;
pub mod ops;
pub mod output;
pub mod prometheus;
pub mod published;
pub mod rules;
pub mod snat_ports;
pub mod state;
pub mod sysctl;
pub mod validate;

pub use error::{Error, Result};
