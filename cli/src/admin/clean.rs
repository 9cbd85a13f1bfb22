//! `ringbus clean`.

use std::process::ExitCode;

use crate::args::RootArgs;

/// `ringbus clean`.
#[derive(clap::Args, Debug)]
pub struct CleanArgs {
    #[command(flatten)]
    root: RootArgs,
}

/// Runs `ringbus clean`.
pub fn main(args: &CleanArgs) -> ExitCode {
    crate::args::fail(format!(
        "clean is not built yet (root {})",
        args.root.dir().display()
    ))
}
