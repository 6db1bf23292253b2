//! Parsing kuutamod's command line and environment, with clap's errors turned into the one-line
//! settings errors kuutamod prints for every other bad input: naming the variable the user set.

use std::ffi::OsString;

use clap::{CommandFactory, Parser};

use super::Args;

/// Parses the command line and the environment. Help and version print and exit 0; every
/// other error becomes one line that names what the user set: the variable when the value came
/// from the environment (`KUUTAMO_SESSION_TTL="30x" is not valid: ...`), the flag otherwise.
pub fn parse_args() -> Result<Args, String> {
    parse_args_from(std::env::args_os())
}

/// [`parse_args`] for a given command line (the environment is the process's).
pub fn parse_args_from(argv: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let argv: Vec<OsString> = argv.into_iter().collect();
    match Args::try_parse_from(&argv) {
        Ok(args) => Ok(args),
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => Err(describe_clap_error(&e, &argv)),
    }
}

fn describe_clap_error(e: &clap::Error, argv: &[OsString]) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let first_line = || {
        let rendered = e.render().to_string();
        let line = rendered.lines().next().unwrap_or_default();
        format!(
            "{}; `kuutamod --help` lists every setting",
            line.trim_start_matches("error: ")
        )
    };
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return first_line();
    }
    let (Some(arg), Some(value)) = (
        text(ContextKind::InvalidArg),
        text(ContextKind::InvalidValue),
    ) else {
        return first_line();
    };
    // "--session-ttl <SESSION_TTL>" -> the flag and its variable.
    let flag = arg
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let var = Args::command()
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|l| flag == format!("--{l}")))
        .and_then(|a| a.get_env().map(|v| v.to_string_lossy().into_owned()));
    let on_command_line = argv
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    let named = match &var {
        Some(var) if !on_command_line => format!("{var}={value:?}"),
        Some(var) => format!("{flag} {value:?} (or {var})"),
        None => format!("{flag} {value:?}"),
    };
    let reason = match e.kind() {
        ErrorKind::InvalidValue => match e.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => format!("use one of: {}", valid.join(", ")),
            _ => "not one of the accepted values".to_string(),
        },
        _ => std::error::Error::source(e).map_or_else(
            || "see `kuutamod --help`".to_string(),
            |source| source.to_string(),
        ),
    };
    format!("{named} is not valid: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_names_the_flag_given_on_the_command_line() {
        let err = parse_args_from(["kuutamod", "--session-ttl", "30x"].map(OsString::from))
            .expect_err("bad duration");
        assert!(
            err.starts_with(
                "--session-ttl \"30x\" (or KUUTAMO_SESSION_TTL) is not valid: unknown unit \"x\""
            ),
            "{err}"
        );
        let err = parse_args_from(["kuutamod", "--failover-mode=hotswap"].map(OsString::from))
            .expect_err("bad mode");
        assert!(err.contains("use one of: restart, hot-swap"), "{err}");
        let err = parse_args_from(["kuutamod", "--no-such-flag"].map(OsString::from))
            .expect_err("unknown flag");
        assert!(
            err.contains("'--no-such-flag'") && !err.contains('\n'),
            "{err}"
        );
    }
}
