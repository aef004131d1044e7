//! The configuration reference (`docs/configuration.md`) against the parser, and the
//! suggestions for misspelt keys.

use super::*;
use crate::config::raw::edit_distance;
use crate::error::ConfigError;
use serde_json::{Map, Value};
use crate::core::testing::env;
use crate::error::SecretSource;
use serde_json::json;

const REFERENCE: &str = include_str!("../../docs/configuration.md");

/// The rows of the reference's key table: (key, cells), the key taken from the first cell
/// (`` `name` ``). The table is the one whose header row starts with `| key | type |`.
fn reference_rows() -> Vec<(String, Vec<String>)> {
    let mut rows = Vec::new();
    let mut lines = REFERENCE.lines().skip_while(|l| !l.starts_with("| key | type |")).skip(2);
    for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
        // `\|` is a literal pipe inside a cell.
        let cells: Vec<String> = line
            .replace("\\|", "\u{0}")
            .split('|')
            .map(|c| c.trim().replace('\u{0}', "|"))
            .collect();
        let key = cells[1].strip_prefix('`').and_then(|k| k.strip_suffix('`'));
        let key = key.unwrap_or_else(|| panic!("first cell is not a `key`: {line}"));
        rows.push((key.to_owned(), cells[1..cells.len() - 1].to_vec()));
    }
    rows
}

/// Every secret variable is set (each to its own 32+ byte value), except the `_PREVIOUS` ones.
fn any_secret(name: &str) -> Option<Vec<u8>> {
    (!name.ends_with("_PREVIOUS")).then(|| format!("{name}-secret-0123456789abcdef0123456789").into_bytes())
}

#[test]
fn the_reference_documents_exactly_the_keys_the_parser_accepts() {
    let documented: Vec<String> = reference_rows().into_iter().map(|(k, _)| k).collect();
    let mut unique = documented.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), documented.len(), "a key is documented twice: {documented:?}");
    let undocumented: Vec<&&str> = KNOWN_KEYS.iter().filter(|k| !documented.iter().any(|d| d == **k)).collect();
    let unknown: Vec<&String> = documented.iter().filter(|d| !KNOWN_KEYS.contains(&d.as_str())).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md and config::KNOWN_KEYS differ: accepted but not documented {undocumented:?}; \
         documented but not accepted {unknown:?}"
    );
}

#[test]
fn every_row_of_the_reference_has_each_column_and_a_working_example() {
    for (key, cells) in reference_rows() {
        assert_eq!(cells.len(), 6, "{key}: expected key, type, default, allowed, example, what it does");
        assert!(!cells[1].is_empty() && !cells[2].is_empty() && !cells[5].is_empty(), "{key}: empty cell");
        let example = cells[4].strip_prefix('`').and_then(|e| e.strip_suffix('`'));
        let example = example.unwrap_or_else(|| panic!("{key}: the example is not one `json value`"));
        let value: serde_json::Value =
            serde_json::from_str(example).unwrap_or_else(|e| panic!("{key}: example {example} is not JSON: {e}"));
        let mut config = json!({"login_cluster": "login_api"});
        config[key.as_str()] = value;
        if let Err(e) = Config::parse(config.to_string().as_bytes(), any_secret) {
            panic!("{key}: the documented example {example} is refused: {e}");
        }
    }
}

#[test]
fn the_complete_example_of_the_reference_parses_and_sets_every_key() {
    let start = REFERENCE.find("## A complete example").expect("section");
    let block = &REFERENCE[start..];
    let json_start = block.find("```json\n").expect("a json block") + "```json\n".len();
    let json_end = json_start + block[json_start..].find("```").expect("block end");
    let text = &block[json_start..json_end];
    let object: Map<String, Value> = serde_json::from_str(text).expect("the example is a JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut known = KNOWN_KEYS.to_vec();
    keys.sort_unstable();
    known.sort_unstable();
    assert_eq!(keys, known, "the complete example sets every key");
    let c = Config::parse(text.as_bytes(), any_secret).unwrap_or_else(|e| panic!("refused: {e}"));
    assert_eq!(c.secret_envs.access, "MYAPP_ACCESS_SECRET");
    assert_eq!(c.cookies.names.access, "session");
}

#[test]
fn the_parser_reads_every_known_key() {
    // A value of the wrong type is refused naming the key, never as an unknown key: so the
    // parser reads every key of the list (and `take` reads no key outside it).
    for key in KNOWN_KEYS {
        let mut config = json!({"login_cluster": "login_api"});
        config[*key] = json!({"not": "this type"});
        match Config::parse(config.to_string().as_bytes(), env) {
            Err(ConfigError::WrongType { key: k, .. }) => assert_eq!(k, *key),
            other => panic!("{key}: expected a wrong-type error, got {:?}", other.err()),
        }
    }
    let mut sorted = KNOWN_KEYS.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), KNOWN_KEYS.len(), "a key is listed twice");
}

fn line(config: serde_json::Value) -> String {
    match Config::parse(config.to_string().as_bytes(), env) {
        Ok(_) => panic!("{config} should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_unknown_key_near_a_known_one_suggests_it() {
    let cases = [
        ("login_clustr", Some("login_cluster")),
        ("cookie_secur", Some("cookie_secure")),
        ("acess_ttl_s", Some("access_ttl_s")),
        ("access_ttl", Some("access_ttl_s")),
        ("refresh_ttl_S", Some("refresh_ttl_s")),
        ("publicPaths", Some("public_paths")),
        ("PUBLIC_PATHS", Some("public_paths")),
        ("login-page", Some("login_page")),
        ("cookie_smae_site", Some("cookie_same_site")), // a transposition is one edit
        ("max_body_bytes", None),
        ("bogus", None),
        ("timeout", None),
        ("", None),
    ];
    for (written, suggestion) in cases {
        assert_eq!(closest_known_key(written), suggestion, "{written}");
        let got = line(json!({"login_cluster": "l", written: 1}));
        let want = match suggestion {
            Some(known) => format!("`{written}`: unknown key; did you mean `{known}`?"),
            None => format!("`{written}`: unknown key"),
        };
        assert_eq!(got, want);
    }
}

#[test]
fn a_missing_required_key_names_a_near_miss() {
    let got = line(json!({"login_clustr": "login_api"}));
    assert_eq!(got, "`login_cluster`: required; found `login_clustr`, did you mean it?");
    assert_eq!(line(json!({"loginCluster": "x"})), "`login_cluster`: required; found `loginCluster`, did you mean it?");
    assert_eq!(line(json!({"cluster": "x"})), "`login_cluster`: required");
    assert_eq!(line(json!({})), "`login_cluster`: required");
    // The value is never shown.
    assert!(!line(json!({"login_clustr": "secret-looking-value"})).contains("secret-looking-value"));
}

#[test]
fn a_configuration_that_is_not_an_object_is_refused_without_quoting_it() {
    let cases: [(&[u8], &str); 5] = [
        (br#""a-secret-looking-string""#, "configuration: must be one JSON object (it is JSON, but not an object)"),
        (b"[1, 2]", "configuration: must be one JSON object (it is JSON, but not an object)"),
        (b"login_cluster: a-secret-looking-string", "configuration: must be one JSON object (not JSON at line 1 column 1)"),
        (b"{\"login_cluster\": ", "configuration: must be one JSON object (the JSON ends early, at line 1 column 18)"),
        (b"\n{\"a\": tru}", "configuration: must be one JSON object (not JSON at line 2 column 10)"),
    ];
    for (raw, want) in cases {
        let got = Config::parse(raw, env).err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), Some(want), "{raw:?}");
    }
}

#[test]
fn error_lines_stay_one_short_line_whatever_the_key() {
    let long = "k".repeat(10_000);
    let got = line(json!({"login_cluster": "l", long.as_str(): 1}));
    assert!(got.len() < 120, "{got}");
    let got = line(json!({"login_cluster": "l", "a\nb`c\u{7}": 1}));
    assert!(!got.contains('\n') && !got.contains('\u{7}'), "{got:?}");
    assert_eq!(got, "`a\\nb\\u{60}c\\u{7}`: unknown key");
}

#[test]
fn edit_distance_counts_insertions_deletions_substitutions_and_swaps() {
    let cases = [("", "", 0), ("abc", "", 3), ("", "abc", 3), ("abc", "abc", 0), ("abc", "abd", 1),
        ("abc", "acb", 1), ("abcd", "abc", 1), ("kitten", "sitting", 3), ("ca", "abc", 3), ("é", "e", 1)];
    for (a, b, d) in cases {
        assert_eq!(edit_distance(a, b), d, "{a} / {b}");
        assert_eq!(edit_distance(b, a), d, "{b} / {a}");
    }
}

#[test]
fn a_missing_secret_says_where_it_was_looked_for() {
    let err = Config::parse(br#"{"login_cluster":"l","access_secret_env":"NOT_SET"}"#, env).err().unwrap();
    assert_eq!(
        err.to_string(),
        "`access_secret_env`: environment variable NOT_SET is not set in the Wasm VM environment (vm_config.environment_variables)"
    );
    assert_eq!(
        err.line(SecretSource::ThisProcess),
        "`access_secret_env`: environment variable NOT_SET is not set in the environment of etls-config-check \
         (which stands in for the Wasm VM environment)"
    );
}

#[test]
fn the_secret_variables_used_are_reported() {
    let with_previous = |name: &str| match name {
        "ETLS_ACCESS_PREVIOUS" => Some(b"previous-access-secret-0123456789abcdef".to_vec()),
        other => env(other),
    };
    let c = Config::parse(br#"{"login_cluster":"l"}"#, with_previous).unwrap();
    assert_eq!(
        c.secret_envs,
        SecretEnvs {
            access: "ETLS_ACCESS".into(),
            refresh: "ETLS_REFRESH".into(),
            access_previous: Some("ETLS_ACCESS_PREVIOUS".into()),
            refresh_previous: None,
        }
    );
}
