//! Operating ringbus: `list`, `inspect` and `clean` read the segments of a root without joining
//! them (through `ringbus::admin`), and show them as a table or as JSON; `inspect` and `group
//! reset` also handle durable topics (through `ringbus::durable`).

pub mod clean;
pub mod durable;
pub mod inspect;
pub mod list;
mod show;
