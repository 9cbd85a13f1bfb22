//! `-v`: the library's log of rare events (a dead participant reclaimed, a recovery, a torn
//! record, a dead-letter move, a lock taken over) on stderr, through `tracing-subscriber`.

use std::io::IsTerminal as _;

use tracing_subscriber::filter::LevelFilter;

/// Installs a stderr logger at the level `verbose` asks: nothing without -v, info with -v, debug
/// with -vv, trace with more.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
