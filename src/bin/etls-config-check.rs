//! `etls-config-check <config.json|->`: validates an etls-auth plugin configuration natively, with
//! exactly the code the filter runs in `on_configure` ([`etls_auth::config::Config::parse`]).
//!
//! The secrets are looked up in this process's environment under the same names the filter reads
//! from the Wasm VM environment (`access_secret_env` / `refresh_secret_env`, default `ETLS_ACCESS`
//! / `ETLS_REFRESH`, plus their `_PREVIOUS` variants), so run it with the environment the Wasm VM
//! will get.
//!
//! Prints `OK` and exits 0 when the configuration is valid. Otherwise prints one line naming the
//! key at fault (the same text the filter logs) on stderr and exits 1. Exit 2: usage error.
//! Never prints a secret value.

use std::io::Read;
use std::process::ExitCode;

use etls_auth::config::Config;

const USAGE: &str = "usage: etls-config-check <config.json|->   (secrets from the environment: ETLS_ACCESS, ETLS_REFRESH, ...)";

/// The raw bytes of environment variable `name`, as the filter gets them in the Wasm VM.
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let source = match args.as_slice() {
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [source] => source.clone(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let json = match read_input(&source) {
        Ok(json) => json,
        Err(why) => {
            eprintln!("etls-config-check: {why}");
            return ExitCode::FAILURE;
        }
    };
    match Config::parse(&json, secret_of) {
        Ok(_) => {
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            ExitCode::FAILURE
        }
    }
}
