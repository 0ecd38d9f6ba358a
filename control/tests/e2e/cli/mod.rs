//! The command line's refusals: bad input on a live host, commands before `init` or without
//! root, and a damaged state file — each fails with one line and changes nothing.

mod live_host;
mod snapshot;
mod state_file;
mod uninitialised;
