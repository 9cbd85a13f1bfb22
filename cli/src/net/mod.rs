//! The network adapter from the command line: `ringbus bridge` (a sidecar bridge) and the
//! remote listing of `ringbus list --remote`; `ringbus bench net` is in `bench/net.rs`.

pub mod bridge;
