//! `ringbus completions SHELL`: the shell completion script of the whole command line, written
//! by `clap_complete` from the same definitions that parse it.

use std::process::ExitCode;

use clap_complete::Shell;

pub const AFTER_LONG_HELP: &str = "\
Install it where your shell looks for completions, e.g.:
  ringbus completions bash > ~/.local/share/bash-completion/completions/ringbus
  ringbus completions zsh > ~/.zfunc/_ringbus     # with fpath+=(~/.zfunc) before compinit
  ringbus completions fish > ~/.config/fish/completions/ringbus.fish";

/// `ringbus completions SHELL`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script of `cmd` for the chosen shell on stdout.
pub fn main(args: &CompletionsArgs, mut cmd: clap::Command) -> ExitCode {
    clap_complete::generate(args.shell, &mut cmd, "ringbus", &mut std::io::stdout());
    ExitCode::SUCCESS
}
