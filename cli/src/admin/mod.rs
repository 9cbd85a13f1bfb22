//! Operating ringbus: `list`, `inspect` and `clean` read the segments of a root without joining
//! them (through `ringbus::admin`), and show them as a table or as JSON.

pub mod clean;
pub mod inspect;
pub mod list;
mod show;
