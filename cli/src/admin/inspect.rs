//! `ringbus inspect`.

use std::process::ExitCode;

use crate::args::RootArgs;

/// `ringbus inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    root: RootArgs,
}

/// Runs `ringbus inspect`.
pub fn main(args: &InspectArgs) -> ExitCode {
    crate::args::fail(format!(
        "inspect is not built yet (root {})",
        args.root.dir().display()
    ))
}
