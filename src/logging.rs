//! Logging setup: human-readable by default, JSON with `--log-format json`; level from `--log-level` or `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "HERALD_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,herald_l2=debug`). `RUST_LOG` overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
}

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        ))
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::Error::from_boxed(e).context("cannot set up logging"))
}

/// Colour codes only for a person at a terminal: never into a file, a pipe or a container runtime's log, and never
/// with `NO_COLOR` set (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        assert!(colour(true, false));
        assert!(!colour(false, false), "a file or a pipe gets no escape codes");
        assert!(!colour(true, true));
    }
}
