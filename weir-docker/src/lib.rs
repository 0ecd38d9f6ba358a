//! weir-docker: Weir as a Docker network driver (libnetwork's remote driver protocol, JSON over
//! HTTP on `/run/docker/plugins/NAME.sock`). `docker network create -d weir` makes a Weir
//! network; every endpoint on it is a Weir container attached through the same
//! `control::ops::container::attach` as `control container create`, with the veth left in the
//! host namespace for Docker to move, rename and configure (`Peer::LeaveInHost`).

pub mod api;
pub mod driver;
pub mod names;
pub mod ports;
pub mod server;
