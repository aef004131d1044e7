//! Cross-origin requests to the filter's own routes (login, refresh, logout): the rule of Go's
//! `net/http.CrossOriginProtection` (docs/sessions.md, "Cross-origin requests"). These routes act
//! on cookies, so a page on another site must not be able to make a browser drive them.
//!
//! - `Sec-Fetch-Site: same-origin` or `none`: allowed.
//! - `Sec-Fetch-Site` with any other value (`same-site`, `cross-site`, anything unknown, any
//!   other case): refused, unless `Origin` is one of `trusted_origins`.
//! - No `Sec-Fetch-Site` but an `Origin`: allowed when the Origin's host and port equal the
//!   request's `:authority`, or the Origin is trusted; refused otherwise (`Origin: null` too).
//! - Neither header (curl, servers, the filter's own refresh-cluster calls): allowed.
//!
//! An empty header counts as absent (as Go's `Header.Get` reads it). Hosts and schemes compare
//! without case; a missing port is the scheme's default one (`https://a` is `https://a:443`).
//! The trusted origins are parsed once, at configure time ([`TrustedOrigins::parse`]); checking
//! a request borrows its header bytes and allocates nothing. No proxy_wasm here.

use crate::core::decision::{Decision, LocalReply, Outcome};
use crate::core::request::RequestView;

/// 403 `{"error":"Cross-origin request refused"}` (no cookie set or cleared) when the request
/// to one of the filter's routes is cross-origin ([`is_allowed`] says no), else `None`.
pub fn refuse(trusted: &TrustedOrigins, req: &RequestView) -> Option<Decision> {
    if is_allowed(trusted, req) {
        return None;
    }
    Some(Decision::Respond(LocalReply::json(Outcome::CrossOriginRefused, 403, r#"{"error":"Cross-origin request refused"}"#)))
}

/// `http` or `https`: the only schemes an origin may be trusted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &[u8]) -> Option<Scheme> {
        if text.eq_ignore_ascii_case(b"https") {
            Some(Scheme::Https)
        } else if text.eq_ignore_ascii_case(b"http") {
            Some(Scheme::Http)
        } else {
            None
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// One origin, split: `host` as written (compared without case), `port` explicit or the
/// scheme's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts<'a> {
    scheme: Scheme,
    host: &'a [u8],
    port: u16,
}

impl Parts<'_> {
    fn same(&self, other: &Parts<'_>) -> bool {
        self.scheme == other.scheme && self.port == other.port && self.host.eq_ignore_ascii_case(other.host)
    }
}

/// One `trusted_origins` entry, normalised: host lowercase, port explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trusted {
    scheme: Scheme,
    host: String,
    port: u16,
}

/// The `trusted_origins` of a configuration, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedOrigins {
    entries: Vec<Trusted>,
}

impl TrustedOrigins {
    /// Parses the entries of `trusted_origins`. Each must be an exact origin
    /// `scheme://host[:port]`: scheme `http` or `https`, a host name (letters, digits, `.`, `-`,
    /// `_`) or an IPv6 address in brackets, a port from 1 to 65535; no user info, path (a
    /// trailing `/` included), query or fragment, and no wildcard. Errors say which entry
    /// (counting from 1) and what is wrong, never the value.
    pub fn parse(entries: &[String]) -> Result<TrustedOrigins, String> {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let parts = parse_entry(entry.as_bytes()).map_err(|why| format!("entry {} {why}", i + 1))?;
                let host = std::str::from_utf8(parts.host).map_err(|_| format!("entry {} has a bad host", i + 1))?;
                Ok(Trusted { scheme: parts.scheme, host: host.to_ascii_lowercase(), port: parts.port })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(TrustedOrigins { entries })
    }

    /// True when the `Origin` header value `origin` is one of these origins.
    fn contains(&self, origin: &Parts<'_>) -> bool {
        self.entries.iter().any(|t| origin.same(&Parts { scheme: t.scheme, host: t.host.as_bytes(), port: t.port }))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// True when a request to one of the filter's routes may go on: see the module doc for the rule.
pub fn is_allowed(trusted: &TrustedOrigins, req: &RequestView) -> bool {
    let origin = present(req.origin.as_deref());
    let trusted_origin = || origin.and_then(parse_origin).is_some_and(|o| trusted.contains(&o));
    match present(req.sec_fetch_site.as_deref()) {
        // Case-sensitive, as browsers send it and as Go compares it: any other spelling is not a
        // value a browser sends, and is treated like `cross-site`.
        Some(b"same-origin" | b"none") => true,
        Some(_) => trusted_origin(),
        None => match origin {
            None => true,
            Some(value) => {
                let same_host = parse_origin(value).is_some_and(|o| is_same_host(&o, present(req.authority.as_deref())));
                same_host || trusted_origin()
            }
        },
    }
}

/// A header value, `None` when absent or empty.
fn present(value: Option<&[u8]>) -> Option<&[u8]> {
    value.filter(|v| !v.is_empty())
}

/// True when `authority` (`host[:port]`, the port defaulting to the origin's scheme's) names the
/// origin's host and port.
fn is_same_host(origin: &Parts<'_>, authority: Option<&[u8]>) -> bool {
    let Some((host, port)) = authority.and_then(split_host_port) else { return false };
    let port = match port {
        Some(port) => parse_port(port),
        None => Some(origin.scheme.default_port()),
    };
    port == Some(origin.port) && !host.is_empty() && host.eq_ignore_ascii_case(origin.host)
}

/// An `Origin` header value as a browser serializes it (`scheme://host[:port]`); `None` for
/// `null`, another scheme, user info, a path, or anything else that is not an http(s) origin.
fn parse_origin(value: &[u8]) -> Option<Parts<'_>> {
    parse_entry(value).ok()
}

/// Splits and checks an origin; the error completes "entry N ...".
fn parse_entry(value: &[u8]) -> Result<Parts<'_>, &'static str> {
    let Some(at) = value.windows(3).position(|w| w == b"://") else {
        return Err("must be an origin scheme://host[:port] (http or https)");
    };
    let scheme = value.get(..at).and_then(Scheme::parse).ok_or("must use the scheme http or https")?;
    let rest = value.get(at + 3..).unwrap_or_default();
    if rest.contains(&b'@') {
        return Err("must not hold user info (`@`)");
    }
    if rest.contains(&b'*') {
        return Err("must be one exact origin: wildcards are not supported");
    }
    if rest.iter().any(|b| matches!(b, b'/' | b'?' | b'#' | b'\\')) {
        return Err("must have no path, query or fragment (not even a trailing `/`)");
    }
    let (host, port) = split_host_port(rest).ok_or("has a bad host")?;
    if !is_host(host) {
        return Err("has a bad host");
    }
    let port = match port {
        Some(port) => parse_port(port).ok_or("has a bad port (1 to 65535)")?,
        None => scheme.default_port(),
    };
    Ok(Parts { scheme, host, port })
}

/// `host[:port]` or `[v6]:port` into the host (brackets kept) and the port text, if any.
fn split_host_port(authority: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    if authority.first() == Some(&b'[') {
        let close = authority.iter().position(|b| *b == b']')?;
        let (host, rest) = authority.split_at_checked(close + 1)?;
        return match rest {
            [] => Some((host, None)),
            [b':', port @ ..] => Some((host, Some(port))),
            _ => None,
        };
    }
    match authority.iter().position(|b| *b == b':') {
        None => Some((authority, None)),
        Some(colon) => {
            let (host, port) = authority.split_at_checked(colon)?;
            Some((host, port.get(1..)))
        }
    }
}

/// A host name (letters, digits, `.`, `-`, `_`) or a bracketed IPv6 address.
fn is_host(host: &[u8]) -> bool {
    match host {
        [] => false,
        [b'[', inner @ .., b']'] => !inner.is_empty() && inner.iter().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')),
        _ => host.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')),
    }
}

/// 1 to 65535, decimal digits only.
fn parse_port(text: &[u8]) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(entries: &[&str]) -> TrustedOrigins {
        TrustedOrigins::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// A POST to a route from `host`, with these optional headers.
    fn request(authority: Option<&str>, site: Option<&str>, origin: Option<&str>) -> RequestView<'static> {
        RequestView {
            method: "POST".into(),
            path: "/api/auth/logout".into(),
            authority: authority.map(|a| a.as_bytes().to_vec().into()),
            sec_fetch_site: site.map(|s| s.as_bytes().to_vec().into()),
            has_origin: origin.is_some(),
            origin: origin.map(|o| o.as_bytes().to_vec().into()),
            ..RequestView::default()
        }
    }

    const HOST: &str = "app.example.com";
    const SELF: &str = "https://app.example.com";
    const OTHER: &str = "https://evil.example";
    const PARTNER: &str = "https://partner.example.org";

    #[test]
    fn sec_fetch_site_row_by_row() {
        let none = TrustedOrigins::default();
        let partner = trusted(&[PARTNER]);
        // (Sec-Fetch-Site, Origin, allowed without trusted origins, allowed with PARTNER trusted)
        let rows: &[(&str, Option<&str>, bool, bool)] = &[
            ("same-origin", None, true, true),
            ("same-origin", Some(SELF), true, true),
            ("same-origin", Some(OTHER), true, true), // the browser's word wins over Origin
            ("none", None, true, true),
            ("none", Some(OTHER), true, true),
            ("same-site", None, false, false),
            ("same-site", Some("https://www.example.com"), false, false),
            ("same-site", Some(PARTNER), false, true),
            ("cross-site", None, false, false),
            ("cross-site", Some(OTHER), false, false),
            ("cross-site", Some(SELF), false, false), // Sec-Fetch-Site says cross-site: Origin = host does not help
            ("cross-site", Some(PARTNER), false, true),
            ("cross-site", Some("https://PARTNER.example.ORG"), false, true),
            ("cross-site", Some("HTTPS://partner.example.org"), false, true),
            ("cross-site", Some("https://partner.example.org:443"), false, true),
            ("cross-site", Some("null"), false, false),
            // Values a browser never sends, and other cases: treated as cross-site.
            ("Same-Origin", None, false, false),
            ("SAME-ORIGIN", Some(SELF), false, false),
            ("None", None, false, false),
            ("same-origin ", None, false, false),
            ("cross-origin", None, false, false),
            ("bogus", Some(PARTNER), false, true),
            ("\u{fffd}", None, false, false),
        ];
        for (site, origin, without, with) in rows {
            let r = request(Some(HOST), Some(site), *origin);
            assert_eq!(is_allowed(&none, &r), *without, "Sec-Fetch-Site {site:?}, Origin {origin:?}");
            assert_eq!(is_allowed(&partner, &r), *with, "trusted: Sec-Fetch-Site {site:?}, Origin {origin:?}");
        }
    }

    #[test]
    fn origin_without_sec_fetch_site_row_by_row() {
        let none = TrustedOrigins::default();
        let partner = trusted(&["HTTPS://Partner.Example.Org"]);
        // (:authority, Origin, allowed without trusted origins, allowed with PARTNER trusted)
        let rows: &[(Option<&str>, Option<&str>, bool, bool)] = &[
            (Some(HOST), None, true, true),
            (None, None, true, true),
            (Some(HOST), Some(SELF), true, true),
            (Some(HOST), Some("http://app.example.com"), true, true), // host and port, as Go: not the scheme
            (Some("APP.example.COM"), Some("https://app.EXAMPLE.com"), true, true),
            (Some("app.example.com:443"), Some(SELF), true, true),
            (Some(HOST), Some("https://app.example.com:443"), true, true),
            (Some("app.example.com:80"), Some(SELF), false, false),
            (Some("app.example.com:8443"), Some("https://app.example.com:8443"), true, true),
            (Some("app.example.com:8443"), Some(SELF), false, false),
            (Some(HOST), Some("https://app.example.com:8443"), false, false),
            (Some("localhost:10000"), Some("http://localhost:10000"), true, true),
            (Some("localhost:10000"), Some("http://localhost:10001"), false, false),
            (Some("[::1]:8080"), Some("http://[::1]:8080"), true, true),
            (Some(HOST), Some(OTHER), false, false),
            (Some(HOST), Some(PARTNER), false, true),
            (Some(HOST), Some("null"), false, false),
            (Some(HOST), Some("https://app.example.com.evil.com"), false, false),
            (Some(HOST), Some("https://evil.com/app.example.com"), false, false),
            (Some(HOST), Some("https://evil@app.example.com"), false, false),
            (Some(HOST), Some("https://app.example.com/"), false, false),
            (Some(HOST), Some("https://app.example.com:"), false, false),
            (Some(HOST), Some("https://app.example.com:0"), false, false),
            (Some(HOST), Some("https://app.example.com:99999"), false, false),
            (Some(HOST), Some("app.example.com"), false, false),
            (Some(HOST), Some("ftp://app.example.com"), false, false),
            (Some(HOST), Some("chrome-extension://abcdef"), false, false),
            (Some(HOST), Some("https://"), false, false),
            (Some(""), Some("https://"), false, false),
            (None, Some(SELF), false, false),
            (Some("app.example.com:x"), Some(SELF), false, false),
            (Some(HOST), Some("https://partner.example.org.evil.com"), false, false),
            (Some(HOST), Some("http://partner.example.org"), false, false),
            (Some(HOST), Some("https://partner.example.org:8443"), false, false),
            (Some(HOST), Some("https://evil@partner.example.org"), false, false),
        ];
        for (authority, origin, without, with) in rows {
            let r = request(*authority, None, *origin);
            assert_eq!(is_allowed(&none, &r), *without, ":authority {authority:?}, Origin {origin:?}");
            assert_eq!(is_allowed(&partner, &r), *with, "trusted: :authority {authority:?}, Origin {origin:?}");
        }
    }

    #[test]
    fn empty_headers_count_as_absent() {
        let none = TrustedOrigins::default();
        assert!(is_allowed(&none, &request(Some(HOST), Some(""), None)));
        assert!(is_allowed(&none, &request(Some(HOST), Some(""), Some(SELF))));
        assert!(!is_allowed(&none, &request(Some(HOST), Some(""), Some(OTHER))));
        assert!(is_allowed(&none, &request(Some(HOST), None, Some(""))));
    }

    #[test]
    fn trusted_entries_are_exact_origins() {
        let ok = trusted(&["https://a.example", "HTTP://B.Example:8080", "https://c.example:443", "http://[::1]:3000", "http://d_e.local"]);
        assert_eq!(ok.len(), 5);
        assert_eq!(ok.entries[1], Trusted { scheme: Scheme::Http, host: "b.example".into(), port: 8080 });
        assert_eq!(ok.entries[2], Trusted { scheme: Scheme::Https, host: "c.example".into(), port: 443 });
        assert!(TrustedOrigins::parse(&[]).unwrap().is_empty());
        let refused: &[(&str, &str)] = &[
            ("", "scheme://host"),
            ("null", "scheme://host"),
            ("a.example", "scheme://host"),
            ("://a.example", "http or https"),
            ("//a.example", "scheme://host"),
            ("ftp://a.example", "http or https"),
            ("https://a.example/", "trailing `/`"),
            ("https://a.example/app", "no path"),
            ("https://a.example?x", "no path"),
            ("https://a.example#x", "no path"),
            ("https://a.example\\", "no path"),
            ("https://user@a.example", "user info"),
            ("https://user:pw@a.example", "user info"),
            ("https://*.a.example", "wildcards"),
            ("*", "scheme://host"),
            ("https://", "bad host"),
            ("https://:443", "bad host"),
            ("https://a example", "bad host"),
            ("https://a.example:", "bad port"),
            ("https://a.example:0", "bad port"),
            ("https://a.example:65536", "bad port"),
            ("https://a.example:+1", "bad port"),
            ("https://a.example:1:2", "bad port"),
            ("https://[::1", "bad host"),
            ("https://[]", "bad host"),
            ("https://é.example", "bad host"),
        ];
        for (entry, why) in refused {
            let error = TrustedOrigins::parse(&["https://fine.example".to_owned(), entry.to_string()]).unwrap_err();
            assert!(error.starts_with("entry 2 ") && error.contains(why), "{entry:?}: {error}");
            assert!(entry.is_empty() || !error.contains(entry), "the value is not shown: {error}");
        }
    }

    /// The status of the core's decision (200 for a forward, 0 for a call or a body read).
    fn status(d: &Decision) -> u32 {
        match d {
            Decision::Respond(r) => r.status,
            Decision::Forward(_) => 200,
            _ => 0,
        }
    }

    fn cross_site(mut r: RequestView<'static>) -> RequestView<'static> {
        r.sec_fetch_site = Some(b"cross-site".to_vec().into());
        r.origin = Some(OTHER.as_bytes().to_vec().into());
        r.has_origin = true;
        r.authority = Some(HOST.as_bytes().to_vec().into());
        r
    }

    #[test]
    fn login_checks_405_then_403_then_415_then_413_then_400() {
        use crate::core::testing::{config, req, NOW};
        let cfg = config();
        let decide = |r: &RequestView| crate::core::decide(&cfg, r, NOW);
        let mut r = cross_site(req("GET", "/api/auth/login", None));
        r.content_type = Some("text/plain".into());
        r.content_length = Some(1 << 20);
        assert_eq!(status(&decide(&r)), 405, "the method first");
        r.method = "POST".into();
        let Decision::Respond(refused) = decide(&r) else { panic!() };
        assert_eq!((refused.status, refused.outcome, refused.body.as_slice()), (403, Outcome::CrossOriginRefused, &br#"{"error":"Cross-origin request refused"}"#[..]));
        assert_eq!(refused.headers(), [("content-type".to_owned(), "application/json".to_owned()), ("cache-control".to_owned(), "no-store".to_owned())]);
        r.sec_fetch_site = Some(b"same-origin".to_vec().into());
        assert_eq!(status(&decide(&r)), 415, "then the type");
        r.content_type = Some("application/json".into());
        assert_eq!(status(&decide(&r)), 413, "then the size");
        r.content_length = None;
        assert_eq!(status(&decide(&r)), 400, "then the body");
    }

    #[test]
    fn refresh_and_logout_check_405_then_403() {
        use crate::core::testing::{config, refresh, req, NOW};
        let cfg = config();
        let session = format!("refreshTokenEtls={}", refresh(NOW + 100));
        for path in ["/api/auth/refreshtoken", "/api/auth/logout"] {
            let r = cross_site(req("PUT", path, Some(&session)));
            assert_eq!(status(&crate::core::decide(&cfg, &r, NOW)), 405, "{path}");
            let mut r = cross_site(req("POST", path, Some(&session)));
            let Decision::Respond(refused) = crate::core::decide(&cfg, &r, NOW) else { panic!() };
            assert_eq!((refused.status, refused.outcome), (403, Outcome::CrossOriginRefused), "{path}");
            assert!(!refused.headers().iter().any(|(n, _)| n == "set-cookie"), "{path}: no cookie set or cleared");
            r.sec_fetch_site = None;
            r.origin = Some(SELF.as_bytes().to_vec().into());
            assert_eq!(status(&crate::core::decide(&cfg, &r, NOW)), 200, "{path}: same host");
        }
    }

    #[test]
    fn protected_and_public_paths_and_preflights_are_unaffected() {
        use crate::core::testing::{access, config, req, NOW};
        let cfg = config();
        let session = format!("accessTokenEtls={}", access(NOW + 100));
        let valid = crate::core::decide(&cfg, &cross_site(req("POST", "/api/orders", Some(&session))), NOW);
        assert!(matches!(valid, Decision::Forward(ref f) if f.outcome == Outcome::SessionValid), "{valid:?}");
        let denied = crate::core::decide(&cfg, &cross_site(req("POST", "/api/orders", None)), NOW);
        assert!(matches!(denied, Decision::Respond(ref r) if r.outcome == Outcome::DeniedNoSession), "{denied:?}");
        let public = crate::core::decide(&cfg, &cross_site(req("POST", "/login", None)), NOW);
        assert!(matches!(public, Decision::Forward(ref f) if f.outcome == Outcome::Public), "{public:?}");
        let mut preflight = cross_site(req("OPTIONS", "/api/auth/login", None));
        preflight.has_cors_request_method = true;
        let passed = crate::core::decide(&cfg, &preflight, NOW);
        assert!(matches!(passed, Decision::Forward(ref f) if f.outcome == Outcome::Preflight), "{passed:?}");
    }

    #[test]
    fn a_trusted_origin_passes_on_every_route() {
        use crate::core::testing::{config_with, req, NOW};
        let cfg = config_with(serde_json::json!({"trusted_origins": ["HTTPS://EVIL.example"]}));
        for path in ["/api/auth/login", "/api/auth/refreshtoken", "/api/auth/logout"] {
            let d = crate::core::decide(&cfg, &cross_site(req("POST", path, None)), NOW);
            assert_ne!(status(&d), 403, "{path}: {d:?}");
        }
    }

    #[test]
    fn an_incoming_origin_parses_only_as_a_browser_writes_it() {
        assert_eq!(parse_origin(b"https://A.example:8443"), Some(Parts { scheme: Scheme::Https, host: b"A.example", port: 8443 }));
        assert_eq!(parse_origin(b"http://a.example"), Some(Parts { scheme: Scheme::Http, host: b"a.example", port: 80 }));
        for bad in [&b"null"[..], b"", b"https://a.example/", b"https://u@a.example", b"https://a.example:0", b"\xff://a", b"https://a\xff"] {
            assert_eq!(parse_origin(bad), None, "{bad:?}");
        }
    }
}
