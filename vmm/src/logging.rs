//! daxvmm's own log: `daxvmm: ` lines on stderr, with `error: `/`warning: ` prefixes, kept out of the
//! middle of guest console lines (through [`crate::console::LogWriter`]).

use crate::console;

/// Starts the log at `level`; RUST_LOG overrides it.
pub fn init(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("RUST_LOG")
        .format(|buf, rec| {
            use std::io::Write;
            writeln!(buf, "daxvmm: {}{}", level_prefix(rec.level()), rec.args())
        })
        .target(env_logger::Target::Pipe(Box::new(console::LogWriter)))
        .init();
}

fn level_prefix(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error: ",
        log::Level::Warn => "warning: ",
        _ => "",
    }
}
