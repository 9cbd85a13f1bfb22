//! `ringbus list`.

use std::process::ExitCode;

use crate::args::RootArgs;

/// `ringbus list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    root: RootArgs,
}

/// Runs `ringbus list`.
pub fn main(args: &ListArgs) -> ExitCode {
    crate::args::fail(format!(
        "list is not built yet (root {})",
        args.root.dir().display()
    ))
}
