//! Unit tests of `config`: defaults, every key's good and bad values, secrets.

use super::*;
use crate::core::cookies::SameSite;
use crate::error::{ConfigError, SecretProblem};
use crate::core::testing::{env, ACCESS_SECRET, REFRESH_SECRET};
use serde_json::json;

fn parse(config: serde_json::Value) -> Result<Config, ConfigError> {
    Config::parse(config.to_string().as_bytes(), env)
}

#[test]
fn cookie_names_and_domain_leave_room_for_a_session() {
    let long_name = "n".repeat(MAX_COOKIE_NAME_BYTES + 1);
    assert_eq!(error_line(json!({"login_cluster": "l", "refresh_cookie": long_name})),
               "`refresh_cookie`: must be at most 128 bytes (it counts toward the 4096 bytes of each Set-Cookie)");
    let long_domain = format!("{}.example", "d".repeat(250));
    assert_eq!(error_line(json!({"login_cluster": "l", "cookie_domain": long_domain})), "`cookie_domain`: must be at most 253 bytes (a domain name)");
    // The largest accepted attributes leave more than 3 KiB of each Set-Cookie for a token.
    let name = "n".repeat(MAX_COOKIE_NAME_BYTES);
    let cfg = parse(json!({"login_cluster": "l", "access_cookie": name, "cookie_domain": format!(".{}", "d".repeat(253)),
                           "cookie_same_site": "None", "refresh_ttl_s": MAX_TTL_S, "access_ttl_s": MAX_TTL_S,
                           "max_session_s": MAX_TTL_S})).unwrap();
    assert!(cfg.cookies.set_access("", MAX_TTL_S).len() < 1024, "{}", cfg.cookies.set_access("", MAX_TTL_S).len());
}

fn error_line(config: serde_json::Value) -> String {
    match parse(config) {
        Ok(_) => panic!("config should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_config_gets_every_default() {
    let c = parse(json!({"login_cluster": "login_api"})).unwrap();
    assert_eq!(c.login.cluster, "login_api");
    assert_eq!(c.login.authority, "login_api");
    assert_eq!(c.login.path, "/login");
    assert_eq!(c.login.timeout, Duration::from_millis(5000));
    assert!(c.refresh.is_none());
    assert_eq!(c.login_refresh_path, None);
    assert_eq!(c.login_logout_path, None);
    assert!(c.trusted_origins.is_empty());
    assert_eq!(c.routes.login, "/api/auth/login");
    assert_eq!(c.routes.refresh, "/api/auth/refreshtoken");
    assert_eq!(c.routes.logout, "/api/auth/logout");
    assert_eq!(c.login_page, "/login");
    assert_eq!(c.public_paths, ["/login"]);
    assert!(c.bypass_cors_preflight);
    assert_eq!((c.access_ttl_s, c.refresh_ttl_s, c.clock_skew_s), (900, 604_800, 5));
    assert!(c.cookies.secure);
    assert_eq!(c.cookies.same_site, SameSite::Strict);
    assert_eq!(c.cookies.domain, None);
    assert_eq!(c.cookies.names.access, "accessTokenEtls");
    assert_eq!(c.cookies.names.refresh, "refreshTokenEtls");
    assert_eq!(c.cookies.names.upstream_access, "accessToken");
    assert_eq!(c.cookies.names.upstream_refresh, "refreshToken");
    assert_eq!(&*c.identity_headers.user_id, "x-etls-user-id");
    assert_eq!(&*c.identity_headers.role, "x-etls-role");
    assert_eq!(c.max_login_body_bytes, 16_384);
    assert_eq!(c.max_session_s, 2_592_000);
}

#[test]
fn refresh_cluster_defaults_authority_and_uses_refresh_path() {
    let c = parse(json!({"login_cluster": "l", "refresh_cluster": "etls_refresh", "refresh_path": "/r"})).unwrap();
    let r = c.refresh.unwrap();
    assert_eq!((r.cluster.as_str(), r.authority.as_str(), r.path.as_str()), ("etls_refresh", "etls_refresh", "/r"));
    assert_eq!(r.timeout, Duration::from_millis(2000));
}

#[test]
fn every_key_is_accepted_with_a_good_value() {
    let c = parse(json!({
        "login_cluster": "l", "login_authority": "login.example.com:443", "login_upstream_path": "/v1/login",
        "login_timeout_ms": 1500, "login_refresh_path": "/v1/refresh", "refresh_cluster": "r", "refresh_authority": "self", "refresh_timeout_ms": 300,
        "login_path": "/a/login", "refresh_path": "/a/refresh", "logout_path": "/a/logout", "login_page": "/signin",
        "public_paths": ["/signin/", "/static"], "bypass_cors_preflight": false, "access_ttl_s": 60,
        "refresh_ttl_s": 3600, "access_secret_env": "ETLS_ACCESS", "refresh_secret_env": "ETLS_REFRESH",
        "clock_skew_s": 0, "cookie_secure": false, "cookie_same_site": "lax", "cookie_domain": "example.com",
        "access_cookie": "a", "refresh_cookie": "r", "upstream_access_cookie": "ua", "upstream_refresh_cookie": "ur",
        "user_id_header": "X-User", "role_header": "x-role", "max_login_body_bytes": 100,
        "login_logout_path": "/v1/logout", "trusted_origins": ["https://partner.example", "HTTP://localhost:3000"],
        "max_session_s": 60
    }))
    .unwrap();
    assert_eq!(c.login_logout_path.as_deref(), Some("/v1/logout"));
    assert_eq!(c.trusted_origins.len(), 2);
    assert_eq!(c.public_paths, ["/signin", "/static"]);
    assert_eq!(&*c.identity_headers.user_id, "x-user");
    assert_eq!(c.cookies.same_site, SameSite::Lax);
    assert_eq!(c.login.authority, "login.example.com:443");
    assert_eq!(c.max_login_body_bytes, 100);
    assert_eq!(c.login_refresh_path.as_deref(), Some("/v1/refresh"));
    assert_eq!(c.max_session_s, 60);
    let equal = parse(json!({"login_cluster": "l", "access_ttl_s": 600, "max_session_s": 600})).unwrap();
    assert_eq!(equal.max_session_s, 600, "max_session_s may equal access_ttl_s");
    let longest = parse(json!({"login_cluster": "l", "max_session_s": MAX_SESSION_S})).unwrap();
    assert_eq!(longest.max_session_s, MAX_SESSION_S);
    let shorter_than_refresh = parse(json!({"login_cluster": "l", "max_session_s": 3600})).unwrap();
    assert_eq!((shorter_than_refresh.max_session_s, shorter_than_refresh.refresh_ttl_s), (3600, 604_800));
}

#[test]
fn each_bad_value_is_refused_naming_its_key() {
    let cases = [
        (json!({"login_cluster": "l", "bogus": 1}), "`bogus`: unknown key"),
        (json!({}), "`login_cluster`: required"),
        (json!({"login_cluster": ""}), "`login_cluster`"),
        (json!({"login_cluster": 5}), "`login_cluster`: must be a string"),
        (json!({"login_cluster": "l", "access_ttl_s": "900"}), "`access_ttl_s`: must be a non-negative integer"),
        (json!({"login_cluster": "l", "access_ttl_s": 0}), "`access_ttl_s`"),
        (json!({"login_cluster": "l", "refresh_ttl_s": 0}), "`refresh_ttl_s`"),
        (json!({"login_cluster": "l", "access_ttl_s": -5}), "`access_ttl_s`"),
        (json!({"login_cluster": "l", "access_ttl_s": 1.5}), "`access_ttl_s`"),
        (json!({"login_cluster": "l", "refresh_ttl_s": 99_999_999u64}), "`refresh_ttl_s`"),
        (json!({"login_cluster": "l", "login_timeout_ms": 0}), "`login_timeout_ms`"),
        (json!({"login_cluster": "l", "refresh_timeout_ms": 0}), "`refresh_timeout_ms`"),
        (json!({"login_cluster": "l", "clock_skew_s": 100_000}), "`clock_skew_s`"),
        (json!({"login_cluster": "l", "login_path": "api/login"}), "`login_path`"),
        (json!({"login_cluster": "l", "refresh_path": "//x"}), "`refresh_path`"),
        (json!({"login_cluster": "l", "logout_path": "/a b"}), "`logout_path`"),
        (json!({"login_cluster": "l", "login_page": "https://evil.example/"}), "`login_page`"),
        (json!({"login_cluster": "l", "login_upstream_path": "login"}), "`login_upstream_path`"),
        (json!({"login_cluster": "l", "login_refresh_path": "refresh"}), "`login_refresh_path`"),
        (json!({"login_cluster": "l", "login_refresh_path": "/r?x=1"}), "`login_refresh_path`"),
        (json!({"login_cluster": "l", "login_refresh_path": 5}), "`login_refresh_path`: must be a string"),
        (json!({"login_cluster": "l", "login_logout_path": "logout"}), "`login_logout_path`"),
        (json!({"login_cluster": "l", "login_logout_path": "/l?x=1"}), "`login_logout_path`"),
        (json!({"login_cluster": "l", "login_logout_path": ""}), "`login_logout_path`"),
        (json!({"login_cluster": "l", "login_logout_path": true}), "`login_logout_path`: must be a string"),
        (json!({"login_cluster": "l", "trusted_origins": "https://a.example"}), "`trusted_origins`: must be an array of strings"),
        (json!({"login_cluster": "l", "trusted_origins": [5]}), "`trusted_origins`: must be an array of strings"),
        (json!({"login_cluster": "l", "trusted_origins": ["https://a.example/"]}), "`trusted_origins`: entry 1 must have no path"),
        (json!({"login_cluster": "l", "trusted_origins": ["https://a.example", "a.example"]}), "`trusted_origins`: entry 2 must be an origin"),
        (json!({"login_cluster": "l", "trusted_origins": ["ftp://a.example"]}), "`trusted_origins`: entry 1 must use the scheme http or https"),
        (json!({"login_cluster": "l", "trusted_origins": ["https://u@a.example"]}), "`trusted_origins`: entry 1 must not hold user info"),
        (json!({"login_cluster": "l", "trusted_origins": ["null"]}), "`trusted_origins`: entry 1 must be an origin"),
        (json!({"login_cluster": "l", "public_paths": ["login"]}), "`public_paths`"),
        (json!({"login_cluster": "l", "public_paths": "/login"}), "`public_paths`: must be an array of strings"),
        (json!({"login_cluster": "l", "bypass_cors_preflight": "yes"}), "`bypass_cors_preflight`: must be true or false"),
        (json!({"login_cluster": "l", "cookie_same_site": "Sometimes"}), "`cookie_same_site`"),
        (json!({"login_cluster": "l", "cookie_same_site": "None", "cookie_secure": false}), "`cookie_same_site`: \"None\" requires"),
        (json!({"login_cluster": "l", "cookie_domain": "a.com; Secure"}), "`cookie_domain`"),
        (json!({"login_cluster": "l", "access_cookie": "a b"}), "`access_cookie`"),
        (json!({"login_cluster": "l", "refresh_cookie": "accessTokenEtls"}), "cookie names must differ"),
        (json!({"login_cluster": "l", "user_id_header": "x user"}), "`user_id_header`"),
        (json!({"login_cluster": "l", "role_header": "cookie"}), "`role_header`"),
        (json!({"login_cluster": "l", "role_header": "x-etls-user-id"}), "`role_header`"),
        (json!({"login_cluster": "l", "max_login_body_bytes": 0}), "`max_login_body_bytes`"),
        (json!({"login_cluster": "l", "max_session_s": 0}), "`max_session_s`: must be between 1 and 315360000 seconds"),
        (json!({"login_cluster": "l", "max_session_s": -1}), "`max_session_s`: must be a non-negative integer"),
        (json!({"login_cluster": "l", "max_session_s": 1.5}), "`max_session_s`: must be a non-negative integer"),
        (json!({"login_cluster": "l", "max_session_s": "3600"}), "`max_session_s`: must be a non-negative integer"),
        (json!({"login_cluster": "l", "max_session_s": true}), "`max_session_s`: must be a non-negative integer"),
        (json!({"login_cluster": "l", "max_session_s": 315_360_001u64}), "`max_session_s`: must be between 1 and 315360000 seconds"),
        (json!({"login_cluster": "l", "max_session_s": 899}), "`max_session_s`: must be at least access_ttl_s"),
        (json!({"login_cluster": "l", "access_ttl_s": 60, "max_session_s": 59}), "`max_session_s`: must be at least access_ttl_s"),
        (json!({"login_cluster": "l", "access_ttl_s": 2_592_001}), "`max_session_s`: the default (2592000 seconds) is below access_ttl_s; set max_session_s"),
        (json!({"login_cluster": "l", "login_authority": "a b"}), "`login_authority`"),
        (json!({"login_cluster": "l", "access_secret_env": "NOT_SET"}), "`access_secret_env`: environment variable NOT_SET is not set"),
        (json!({"login_cluster": "l", "refresh_secret_env": "NOT_SET"}), "`refresh_secret_env`: environment variable NOT_SET is not set"),
        (json!({"login_cluster": "l", "access_secret_env": "bad name"}), "`access_secret_env`"),
        (json!({"login_cluster": "l", "login_path": "/x", "logout_path": "/x"}), "must differ"),
        (json!({"login_cluster": "l", "login_page": "/\\evil.example"}), "`login_page`: must be a path"),
        (json!({"login_cluster": "l", "public_paths": ["/a\\b"]}), "`public_paths`: must be a path"),
        (json!({"login_cluster": "l", "access_cookie": "__Host-a", "cookie_domain": "example.com"}), "`access_cookie`: a __Host- cookie"),
        (json!({"login_cluster": "l", "refresh_cookie": "__host-r", "cookie_secure": false}), "`refresh_cookie`: a __Host- cookie"),
        (json!({"login_cluster": "l", "upstream_refresh_cookie": "__Secure-r", "cookie_secure": false}), "`upstream_refresh_cookie`: a __Secure- cookie"),
    ];
    for (config, expected) in cases {
        let line = error_line(config.clone());
        assert!(line.contains(expected), "{config}: got {line:?}, expected it to contain {expected:?}");
        assert!(!line.contains('\n'));
    }
}

#[test]
fn a_key_given_twice_is_refused() {
    for raw in [&br#"{"login_cluster":"a","login_cluster":"b"}"#[..], br#"{"login_cluster":"a","cookie_secure":true,"cookie_secure":false}"#,
                br#"{"login_cluster":"a","nope":1,"nope":2}"#] {
        let err = Config::parse(raw, env).err().unwrap();
        assert!(matches!(err, ConfigError::DuplicateKey(_)), "{err:?}");
    }
    assert_eq!(
        Config::parse(br#"{"login_cluster":"a","cookie_secure":true,"cookie_secure":false}"#, env).err().unwrap().to_string(),
        "`cookie_secure`: given more than once; keep one"
    );
    // Nested objects are values: the same key in two of them is fine.
    assert!(Config::parse(br#"{"login_cluster":"a","public_paths":["/a","/a"]}"#, env).is_ok());
}

#[test]
fn cookie_prefixes_are_allowed_where_browsers_keep_them() {
    let host = parse(json!({"login_cluster": "l", "access_cookie": "__Host-a", "refresh_cookie": "__Host-r"})).unwrap();
    assert_eq!(host.cookies.names.access, "__Host-a");
    assert!(parse(json!({"login_cluster": "l", "access_cookie": "__Secure-a", "cookie_domain": "example.com"})).is_ok());
    assert!(parse(json!({"login_cluster": "l", "access_cookie": "_Host-a", "cookie_secure": false})).is_ok(), "not the prefix");
}

#[test]
fn not_a_json_object_is_refused() {
    for raw in [&b"[1]"[..], b"not json", b"{\"login_cluster\": ", b"\xff\xfe"] {
        assert!(matches!(Config::parse(raw, env), Err(ConfigError::NotJsonObject(_))), "{raw:?}");
    }
    assert_eq!(Config::parse(b"", env).err(), Some(ConfigError::Missing { key: "login_cluster", near_miss: None }));
}

type Env = &'static [(&'static str, &'static [u8])];

fn secrets(pairs: Env) -> impl Fn(&str) -> Option<Vec<u8>> {
    move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_vec())
}

#[test]
fn secrets_must_exist_be_long_and_differ() {
    let config = br#"{"login_cluster":"l"}"#;
    let short: &[u8] = b"0123456789012345678901234567890"; // 31 bytes
    let cases: [(Env, SecretProblem, &str); 6] = [
        (&[("ETLS_REFRESH", REFRESH_SECRET)], SecretProblem::Missing, "ETLS_ACCESS"),
        (&[("ETLS_ACCESS", ACCESS_SECRET)], SecretProblem::Missing, "ETLS_REFRESH"),
        (&[("ETLS_ACCESS", b"0123456789012345678901234567890"), ("ETLS_REFRESH", REFRESH_SECRET)], SecretProblem::TooShort, "ETLS_ACCESS"),
        (&[("ETLS_ACCESS", ACCESS_SECRET), ("ETLS_REFRESH", ACCESS_SECRET)], SecretProblem::SameAsOtherKind, "ETLS_REFRESH"),
        (&[("ETLS_ACCESS", ACCESS_SECRET), ("ETLS_REFRESH", REFRESH_SECRET), ("ETLS_ACCESS_PREVIOUS", REFRESH_SECRET)], SecretProblem::SameAsOtherKind, "ETLS_REFRESH"),
        (&[("ETLS_ACCESS", ACCESS_SECRET), ("ETLS_REFRESH", REFRESH_SECRET), ("ETLS_REFRESH_PREVIOUS", b"short")], SecretProblem::TooShort, "ETLS_REFRESH_PREVIOUS"),
    ];
    assert_eq!(short.len(), 31);
    for (env, problem, name) in cases {
        match Config::parse(config, secrets(env)) {
            Err(ConfigError::Secret { env, problem: p, .. }) => assert_eq!((env.as_str(), p), (name, problem)),
            other => panic!("expected a secret error for {name}, got {:?}", other.err()),
        }
    }
    let exactly_32: Env =
        &[("ETLS_ACCESS", b"01234567890123456789012345678901"), ("ETLS_REFRESH", REFRESH_SECRET)];
    assert!(Config::parse(config, secrets(exactly_32)).is_ok());
}

#[test]
fn error_lines_never_contain_a_secret() {
    let env: Env = &[("ETLS_ACCESS", ACCESS_SECRET), ("ETLS_REFRESH", ACCESS_SECRET)];
    let line = Config::parse(br#"{"login_cluster":"l"}"#, secrets(env)).err().unwrap().to_string();
    assert!(!line.contains(std::str::from_utf8(ACCESS_SECRET).unwrap()), "{line}");
}
