//! `etls-config-check` as a user runs it: the built binary, its output and exit status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_etls-config-check");
const ACCESS: &str = "check-access-secret-0123456789abcdefghij";
const REFRESH: &str = "check-refresh-secret-0123456789abcdefghi";

/// Runs the binary with exactly `env` (no inherited variables), `input` on stdin.
fn run(args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start etls-config-check");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SECRETS: &[(&str, &str)] = &[("ETLS_ACCESS", ACCESS), ("ETLS_REFRESH", REFRESH)];

#[test]
fn a_valid_configuration_prints_ok_and_the_secret_variables_it_read() {
    let out = run(&["-"], SECRETS, r#"{"login_cluster": "login_api"}"#);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "OK\nsecrets read from the environment of etls-config-check (standing in for the Wasm VM environment): \
         ETLS_ACCESS, ETLS_REFRESH\n"
    );
    assert_eq!(text(&out.stderr), "");

    let env = [("MY_A", ACCESS), ("ETLS_REFRESH", REFRESH), ("MY_A_PREVIOUS", "old-access-secret-0123456789abcdefghijk")];
    let out = run(&["-"], &env, r#"{"login_cluster": "l", "access_secret_env": "MY_A"}"#);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with(": MY_A, ETLS_REFRESH, MY_A_PREVIOUS\n"), "{}", text(&out.stdout));
}

#[test]
fn an_invalid_configuration_exits_1_with_one_line_naming_the_key() {
    let cases = [
        (r#"{"login_cluster": "l", "cookie_secur": false}"#, "invalid configuration: `cookie_secur`: unknown key; did you mean `cookie_secure`?"),
        (r#"{"login_clustr": "l"}"#, "invalid configuration: `login_cluster`: required; found `login_clustr`, did you mean it?"),
        (r#"{"login_cluster": "l", "clock_skew_s": 7200}"#, "invalid configuration: `clock_skew_s`: must be at most 3600"),
        (r#"{"login_cluster": "l", "max_session_s": 600, "access_ttl_s": 900}"#, "invalid configuration: `max_session_s`: must be at least access_ttl_s"),
        (r#"{"login_cluster": "l", "max_session_s": 0}"#, "invalid configuration: `max_session_s`: must be between 1 and 315360000 seconds"),
        ("[1]", "invalid configuration: configuration: must be one JSON object"),
    ];
    for (config, want) in cases {
        let out = run(&["-"], SECRETS, config);
        assert_eq!(out.status.code(), Some(1), "{config}");
        assert_eq!(text(&out.stdout), "");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(want), "{config}: {err}");
    }
}

#[test]
fn a_missing_secret_says_it_was_looked_for_in_this_process_environment() {
    let out = run(&["-"], &[("ETLS_ACCESS", ACCESS)], r#"{"login_cluster": "l"}"#);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "invalid configuration: `refresh_secret_env`: environment variable ETLS_REFRESH is not set in the environment \
         of etls-config-check (which stands in for the Wasm VM environment)\n"
    );
    // Secrets are never printed, whatever goes wrong with them.
    let out = run(&["-"], &[("ETLS_ACCESS", ACCESS), ("ETLS_REFRESH", ACCESS)], r#"{"login_cluster": "l"}"#);
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stderr).contains(ACCESS));
}

#[test]
fn a_file_is_read_and_a_missing_one_is_exit_2() {
    let dir = std::env::temp_dir().join(format!("etls-config-check-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("plugin.json");
    std::fs::write(&file, r#"{"login_cluster": "login_api"}"#).expect("write");
    let out = run(&[file.to_str().expect("utf-8 path")], SECRETS, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("OK\n"));

    let missing = dir.join("absent.json");
    let out = run(&[missing.to_str().expect("utf-8 path")], SECRETS, "");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.starts_with("etls-config-check: cannot read ") && err.contains("absent.json"), "{err}");
    let out = run(&[dir.to_str().expect("utf-8 path")], SECRETS, "");
    assert_eq!(out.status.code(), Some(2), "a directory is unreadable input");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [&[][..], &["a.json", "b.json"][..], &["--verbose"][..]] {
        let out = run(args, SECRETS, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).starts_with("usage: etls-config-check"), "{args:?}");
        assert_eq!(text(&out.stdout), "");
    }
    for flag in ["--help", "-h"] {
        let out = run(&[flag], &[], "");
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(help.starts_with("usage: etls-config-check"), "{help}");
        for needle in ["OWN environment", "ETLS_ACCESS", "_PREVIOUS", "0  the configuration is valid",
                       "1  the configuration is invalid", "2  usage error, or the input cannot be read"] {
            assert!(help.contains(needle), "--help lacks {needle:?}");
        }
    }
}
