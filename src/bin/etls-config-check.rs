//! `etls-config-check <config.json|->`: validates an etls-auth plugin configuration natively, with
//! exactly the code the filter runs in `on_configure` ([`etls_auth::config::Config::parse`]).
//! `--help` prints what it does; exit status 0 valid, 1 invalid configuration, 2 usage error or
//! unreadable input. Never prints a secret value.

use std::io::{Read, Write};
use std::process::ExitCode;

use etls_auth::config::Config;
use etls_auth::error::SecretSource;

const USAGE: &str = "usage: etls-config-check [--help] <config.json | ->";

const HELP: &str = "\
Checks an etls-auth plugin configuration (the JSON object Envoy passes to the filter as
`configuration`, or Istio as `pluginConfig`) with the filter's own parser, outside Envoy.

Arguments:
  <config.json>   a file holding the JSON object
  -               read the JSON object from standard input
  -h, --help      print this help

Secrets: the filter reads its two signing secrets from the Wasm VM environment. This program
stands in for that VM and reads them from its OWN environment, under the same names:
`access_secret_env` and `refresh_secret_env` of the configuration (default ETLS_ACCESS and
ETLS_REFRESH), plus <NAME>_PREVIOUS when set. Run it with the variables the VM will get, e.g.
  ETLS_ACCESS=... ETLS_REFRESH=... etls-config-check plugin.json
No secret value is ever printed.

Output: `OK` on standard output, then a line naming the secret variables it used; or, on standard
error, one line naming the key at fault (the line the filter logs in Envoy).

Exit status:
  0  the configuration is valid
  1  the configuration is invalid
  2  usage error, or the input cannot be read (a missing file, for example)

Reference: docs/configuration.md in the etls-auth repository.
";

const INVALID: u8 = 1;
const USAGE_OR_INPUT: u8 = 2;

/// The raw bytes of environment variable `name` of this process, as the filter gets them in the
/// Wasm VM.
fn secret_of(name: &str) -> Option<Vec<u8>> {
    let value = std::env::var_os(name)?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Some(value.into_vec())
    }
    #[cfg(not(unix))]
    {
        value.into_string().ok().map(String::into_bytes)
    }
}

fn read_input(source: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    if source == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        bytes = std::fs::read(source).map_err(|e| format!("cannot read {source}: {e}"))?;
    }
    Ok(bytes)
}

/// Writes to stdout; a closed pipe (`| head`) is not worth a panic.
fn say(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let source = match args.as_slice() {
        [flag] if flag == "-h" || flag == "--help" => {
            say(&format!("{USAGE}\n\n{HELP}"));
            return ExitCode::SUCCESS;
        }
        [source] if source == "-" || !source.starts_with('-') => source.clone(),
        _ => {
            eprintln!("{USAGE}   (--help for more)");
            return ExitCode::from(USAGE_OR_INPUT);
        }
    };
    let json = match read_input(&source) {
        Ok(json) => json,
        Err(why) => {
            eprintln!("etls-config-check: {why}");
            return ExitCode::from(USAGE_OR_INPUT);
        }
    };
    match Config::parse(&json, secret_of) {
        Ok(config) => {
            let envs = &config.secret_envs;
            let mut used = vec![envs.access.as_str(), envs.refresh.as_str()];
            used.extend(envs.access_previous.as_deref());
            used.extend(envs.refresh_previous.as_deref());
            say(&format!(
                "OK\nsecrets read from the environment of etls-config-check (standing in for the Wasm VM environment): {}\n",
                used.join(", ")
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("invalid configuration: {}", e.line(SecretSource::ThisProcess));
            ExitCode::from(INVALID)
        }
    }
}
