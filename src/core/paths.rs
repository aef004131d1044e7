//! Path matching for public paths, and the `next` parameter of a login redirect.
//! A path only counts as public when it is already in canonical form: dot-segments, encoded
//! dots, slashes or backslashes, repeated slashes and the like make a path protected, so no
//! upstream normalisation can turn a "public" path into a protected one. No proxy_wasm here.

/// True when `path` (no query) is `P` or lies under `P/` for a public path `P`, and is canonical.
pub fn is_public(public_paths: &[String], path: &str) -> bool {
    is_canonical(path)
        && public_paths.iter().any(|public| {
            path == public
                || public == "/" && path == "/"
                || path.strip_prefix(public.as_str()).is_some_and(|rest| rest.starts_with('/'))
        })
}

/// Canonical: starts with one `/`; no empty, `.` or `..` segment; no backslash, `;`, control
/// byte or space; and no percent-encoding of an unreserved character, `/`, `\` or `%`
/// (RFC 3986 section 6.2.2: such a path could be decoded into something else upstream).
fn is_canonical(path: &str) -> bool {
    let bytes = path.as_bytes();
    if !path.starts_with('/') || bytes.iter().any(|&b| b <= b' ' || b == 0x7f || b == b'\\' || b == b';') {
        return false;
    }
    // An empty segment is allowed only last (a trailing slash).
    let last = path.split('/').count().saturating_sub(2);
    let segments_ok = path
        .split('/')
        .skip(1)
        .enumerate()
        .all(|(i, seg)| seg != "." && seg != ".." && (!seg.is_empty() || i == last));
    segments_ok && percent_encodings_are_safe(bytes)
}

fn percent_encodings_are_safe(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|&b| b == b'%') {
        let after = rest.get(pos + 1..).unwrap_or_default();
        let decoded = match (after.first().copied().and_then(hex), after.get(1).copied().and_then(hex)) {
            (Some(hi), Some(lo)) => hi * 16 + lo,
            _ => return false,
        };
        let is_unreserved = decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded);
        if is_unreserved || matches!(decoded, b'/' | b'\\' | b'%') {
            return false;
        }
        rest = after.get(2..).unwrap_or_default();
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `login_page?next=<path and query, percent-encoded>`. A `:path` that is not a local path
/// (`//host`, `/\host`, absolute-form) becomes `/`, so `next` never points off-site.
pub fn login_redirect(login_page: &str, path_and_query: &str) -> String {
    let is_local = path_and_query.starts_with('/')
        && !path_and_query.starts_with("//")
        && !path_and_query.starts_with("/\\");
    let next = if is_local { path_and_query } else { "/" };
    let separator = if login_page.contains('?') { '&' } else { '?' };
    format!("{login_page}{separator}next={}", encode_component(next))
}

/// Percent-encodes every byte but RFC 3986 unreserved characters.
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> Vec<String> {
        vec!["/login".into(), "/static".into()]
    }

    #[test]
    fn public_path_matches_itself_and_what_lies_under_it() {
        for p in ["/login", "/login/", "/login/reset", "/static/app.js", "/static/a%20b.css", "/login/caf%C3%A9"] {
            assert!(is_public(&public(), p), "{p} should be public");
        }
    }

    #[test]
    fn lookalikes_are_protected() {
        for p in ["/loginx", "/logi", "/", "/Login", "/admin", "/api/login", "", "login"] {
            assert!(!is_public(&public(), p), "{p} should be protected");
        }
    }

    #[test]
    fn bypass_attempts_are_protected() {
        let attempts = [
            "/login/../admin", "/login/..", "/login/./x", "/login/%2e%2e/admin", "/login/%2E%2E/admin",
            "/login/.%2e/admin", "/login%2fadmin", "/login%2F..%2Fadmin", "/login/..%2fadmin",
            "/login//../admin", "//login/../admin", "/login\\..\\admin", "/login/%5c..%5cadmin",
            "/login/..;/admin", "/login;/../admin", "/login/%252e%252e/admin", "/log%69n", "/login/%",
            "/login/%zz", "/login/\u{0}x", "/login/a b", "/./login", "/login/%2e", "/login//x",
        ];
        for p in attempts {
            assert!(!is_public(&public(), p), "{p} must not be public");
        }
    }

    #[test]
    fn root_public_path_makes_only_the_root_public() {
        let root = vec!["/".to_owned()];
        assert!(is_public(&root, "/"));
        assert!(!is_public(&root, "/admin"));
    }

    #[test]
    fn redirect_encodes_path_and_query() {
        assert_eq!(login_redirect("/login", "/dash/x?a=1&b=2"), "/login?next=%2Fdash%2Fx%3Fa%3D1%26b%3D2");
        assert_eq!(login_redirect("/login?lang=en", "/d"), "/login?lang=en&next=%2Fd");
    }

    #[test]
    fn redirect_never_points_off_site() {
        assert_eq!(login_redirect("/login", "//evil.example/x"), "/login?next=%2F");
        assert_eq!(login_redirect("/login", "/\\evil.example"), "/login?next=%2F");
        assert_eq!(login_redirect("/login", "https://evil.example/"), "/login?next=%2F");
    }
}
