//! Options and helpers shared by the verbs that work on the segments of one root: where the root
//! is, and how a failure is reported.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use ringbus::{Node, OpenError};

/// Where the segments live: `--root DIR`, else `$RINGBUS_ROOT`, else `/dev/shm/ringbus-<euid>`
/// (the library's default).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RootArgs {
    /// Directory of the segments [default: $RINGBUS_ROOT, else /dev/shm/ringbus-<euid>]
    // Not clap's `env`: an empty RINGBUS_ROOT means the default, as in the library.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl RootArgs {
    /// The root directory these options name (not created: a reader must not make one):
    /// `--root`, else the library's default (`$RINGBUS_ROOT` unless empty, else
    /// `/dev/shm/ringbus-<euid>`).
    pub fn dir(&self) -> PathBuf {
        match &self.root {
            Some(dir) => dir.clone(),
            None => ringbus::admin::default_root(),
        }
    }

    /// A node on that root (created owner-only if missing), for the verbs that join.
    #[allow(dead_code)] // used by the talking verbs (talk/)
    pub fn node(&self) -> Result<Node, OpenError> {
        Node::with_root(self.dir())
    }
}

/// Reports a failed run: one line on stderr naming the problem (the library's errors name the
/// fix), and exit code 1.
pub fn fail(what: impl Display) -> ExitCode {
    eprintln!("ringbus: error: {what}");
    ExitCode::from(1)
}
