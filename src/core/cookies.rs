//! The only place that reads our cookies from a `Cookie` header and formats `Set-Cookie` values.
//! Setting and clearing share one `CookiePolicy`, so a cleared cookie always carries the
//! attributes it was set with (or the browser keeps it). No proxy_wasm here.
//!
//! Cookies are read as the `cookie` crate's `Cookie::parse` reads them (the tests hold the two
//! equal; the crate is only a dev-dependency now): the crate parses every `Expires` date with the
//! `time` crate, which the filter never needs, and that was about 30 KB of the `.wasm`.

/// The `SameSite` attribute of every cookie the filter sets (`cookie_same_site`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// Largest `Set-Cookie` value the filter ever sends, in bytes (name, value and attributes): the
/// size RFC 6265 section 6.1 requires browsers to keep; a larger cookie is dropped silently.
pub const MAX_SET_COOKIE_BYTES: usize = 4096;

/// The four cookie names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    /// The ETLS access token.
    pub access: String,
    /// The ETLS refresh token.
    pub refresh: String,
    /// The login API's own access token, passed on verbatim.
    pub upstream_access: String,
    /// The login API's own refresh token, passed on verbatim.
    pub upstream_refresh: String,
}

impl CookieNames {
    /// True when no two of the four names are equal.
    pub fn are_distinct(&self) -> bool {
        let all = [&self.access, &self.refresh, &self.upstream_access, &self.upstream_refresh];
        all.iter().enumerate().all(|(i, a)| all.iter().skip(i + 1).all(|b| a != b))
    }
}

/// Names and attributes of every cookie the filter sets, with the clearing set built once.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    pub names: CookieNames,
    pub secure: bool,
    pub same_site: SameSite,
    pub domain: Option<String>,
    cleared: Vec<String>,
}

impl CookiePolicy {
    /// Builds the policy. Lifetimes are not part of it: each cookie lives as long as the token it
    /// carries (`core::lifetime`), so every setter takes its `Max-Age` in seconds.
    pub fn new(names: CookieNames, secure: bool, same_site: SameSite, domain: Option<String>) -> Self {
        let mut policy = CookiePolicy { names, secure, same_site, domain, cleared: Vec::new() };
        let names = &policy.names;
        policy.cleared = [&names.access, &names.refresh, &names.upstream_access, &names.upstream_refresh]
            .iter()
            .map(|name| policy.format(name, "", 0))
            .collect();
        policy
    }

    /// `Set-Cookie` for the ETLS access token, living `max_age_s` (the token's `exp - iat`).
    pub fn set_access(&self, value: &str, max_age_s: u64) -> String {
        self.format(&self.names.access, value, max_age_s)
    }

    /// `Set-Cookie` for the ETLS refresh token, living `max_age_s` (the token's `exp - iat`).
    pub fn set_refresh(&self, value: &str, max_age_s: u64) -> String {
        self.format(&self.names.refresh, value, max_age_s)
    }

    /// `Set-Cookie` values for the login API's own two tokens, both living `max_age_s` (the
    /// lifetime of the ETLS refresh token set with them).
    pub fn set_upstream(&self, access: &str, refresh: &str, max_age_s: u64) -> [String; 2] {
        [
            self.format(&self.names.upstream_access, access, max_age_s),
            self.format(&self.names.upstream_refresh, refresh, max_age_s),
        ]
    }

    /// The name and size of the first of `set_cookies` (values this policy formatted) that is
    /// larger than [`MAX_SET_COOKIE_BYTES`], if any. The name is one of the four configured ones.
    pub fn oversized(&self, set_cookies: &[String]) -> Option<(&str, usize)> {
        let names = &self.names;
        let all = [&names.access, &names.refresh, &names.upstream_access, &names.upstream_refresh];
        set_cookies.iter().find(|c| c.len() > MAX_SET_COOKIE_BYTES).map(|c| {
            let name = all
                .iter()
                .find(|n| c.strip_prefix(n.as_str()).is_some_and(|rest| rest.starts_with('=')))
                .map_or("?", |n| n.as_str());
            (name, c.len())
        })
    }

    /// The four clearing `Set-Cookie` values: empty value, `Max-Age=0`, same attributes.
    pub fn clear_all(&self) -> &[String] {
        &self.cleared
    }

    /// `name=value; HttpOnly; SameSite=..; [Secure; ]Path=/; [Domain=..; ]Max-Age=..`: the
    /// attributes, order and spelling of the `cookie` crate's `Display` (which this replaced to
    /// keep its date parsing and formatting out of the filter), written into one buffer.
    fn format(&self, name: &str, value: &str, max_age_s: u64) -> String {
        let max_age = i64::try_from(max_age_s).unwrap_or(i64::MAX);
        let same_site = match self.same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        };
        let mut out = String::with_capacity(name.len() + value.len() + 96);
        for part in [name, "=", value, "; HttpOnly; SameSite=", same_site] {
            out.push_str(part);
        }
        if self.secure {
            out.push_str("; Secure");
        }
        out.push_str("; Path=/");
        if let Some(domain) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(domain.strip_prefix('.').unwrap_or(domain));
        }
        out.push_str("; Max-Age=");
        out.push_str(&max_age.to_string());
        out
    }
}

/// The segments of a raw `Cookie` header: the bytes between `;`s, untouched.
fn segments(cookie_header: &[u8]) -> impl Iterator<Item = &[u8]> {
    cookie_header.split(|b| *b == b';')
}

/// The value of the first cookie called `name` in a raw `Cookie` request header, if any, without
/// the DQUOTEs RFC 6265 (section 4.1.1) allows around a value, as the `cookie` crate's
/// `value_trimmed` and most servers read it (the Next.js app's `cookie` package too).
///
/// Read as the `cookie` crate's `Cookie::parse` reads each `;`-separated segment (the reading it
/// replaced, on the request path of every session; the unit and property tests hold the two
/// equal): a segment that is not UTF-8 is never a cookie (the next copy is found), the name is
/// what comes before the first `=` and the value what follows it, both trimmed of Unicode
/// whitespace, and a nameless segment is no cookie. Nothing is allocated or copied: one pass
/// over the bytes up to the cookie, eight at a time, and only a segment that may carry the name
/// is looked at further.
pub fn find<'h>(cookie_header: &'h [u8], name: &str) -> Option<&'h str> {
    let mut rest = cookie_header;
    loop {
        let (end, ascii) = segment_end(rest);
        let (segment, tail) = rest.split_at_checked(end)?;
        if may_be_named(segment, name) {
            if let Some(value) = value_if_named(segment, ascii, name) {
                return Some(value.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')).unwrap_or(value));
            }
        }
        // `tail` starts with the `;` that ended the segment, or is empty at the end.
        rest = tail.get(1..)?;
    }
}

/// Where the first segment of `bytes` ends (the index of its `;`, or the length), and whether
/// the segment is ASCII. Eight bytes at a time where it can (the segment holding a token is
/// hundreds of bytes long), then byte by byte.
fn segment_end(bytes: &[u8]) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const SEMI: u64 = ONES * b';' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut high = 0u64;
    let mut start = 0;
    for chunk in chunks.by_ref() {
        let word = chunk.try_into().map_or(SEMI, u64::from_le_bytes);
        let x = word ^ SEMI;
        // Nonzero exactly when some byte of `x` is zero, i.e. some byte of `word` is `;`.
        if x.wrapping_sub(ONES) & !x & HIGH != 0 {
            break;
        }
        high |= word;
        start += 8;
    }
    let mut ascii = high & HIGH == 0;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if b == b';' {
            return (i, ascii);
        }
        ascii &= b.is_ascii();
    }
    (bytes.len(), ascii)
}

/// The value of the cookie in `segment` (no `;`) if its name is `name`, read as the `cookie`
/// crate reads it (see [`find`]); `ascii` says the segment is ASCII, where the crate's Unicode
/// whitespace is ASCII whitespace (U+0009 to U+000D, space) and UTF-8 needs no check.
fn value_if_named<'s>(segment: &'s [u8], ascii: bool, name: &str) -> Option<&'s str> {
    if !ascii {
        return name_and_value(std::str::from_utf8(segment).ok()?).filter(|(key, _)| *key == name).map(|(_, value)| value);
    }
    let eq = segment.iter().position(|b| *b == b'=')?;
    let (key, value) = (segment.get(..eq)?, segment.get(eq + 1..)?);
    let key = trim_whitespace(key);
    if key.is_empty() || key != name.as_bytes() {
        return None;
    }
    std::str::from_utf8(trim_whitespace(value)).ok()
}

/// The cookie's name and value in `text` (one cookie, no `;`) as the `cookie` crate's
/// `Cookie::parse` reads them: what comes before the first `=` and what follows it, trimmed of
/// Unicode whitespace; `None` without `=` or with an empty name (no cookie).
fn name_and_value(text: &str) -> Option<(&str, &str)> {
    let (key, value) = text.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()).then(|| (key, value.trim()))
}

/// `bytes` (ASCII) without the whitespace `str::trim` removes (U+0009 to U+000D, space: unlike
/// `trim_ascii`, which keeps U+000B).
fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let white = |b: &u8| matches!(b, b'\t'..=b'\r' | b' ');
    let start = bytes.iter().position(|b| !white(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !white(b)).map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// False only for a segment whose cookie cannot be called `name`, so that [`find`] leaves it
/// unparsed (most segments of a browser's header are other cookies). The crate trims the name of
/// Unicode whitespace, so past leading ASCII whitespace (U+0009 to U+000D, space) the segment must
/// start with `name`, unless a non-ASCII byte comes first (it may begin other whitespace): such a
/// segment is parsed.
fn may_be_named(segment: &[u8], name: &str) -> bool {
    let start = segment.iter().position(|b| !matches!(b, b'\t'..=b'\r' | b' ')).unwrap_or(segment.len());
    let rest = segment.get(start..).unwrap_or_default();
    rest.first().is_some_and(|b| !b.is_ascii()) || rest.starts_with(name.as_bytes())
}

/// The raw `Cookie` header to forward after a rotation: each `(name, value)` of `renewed`
/// replaces the value of every cookie of that name, in place (the whitespace around the segment
/// kept), and is added at the end when the client sent none. Every other byte stays as the
/// client sent it: other cookies, nameless and non-UTF-8 segments, order, spacing, empty segments.
pub fn with_values(cookie_header: &[u8], renewed: &[(&str, &str)]) -> Vec<u8> {
    let extra: usize = renewed.iter().map(|(n, v)| n.len() + v.len() + 3).sum();
    let mut out = Vec::with_capacity(cookie_header.len() + extra);
    let mut found = vec![false; renewed.len()];
    for (i, segment) in segments(cookie_header).enumerate() {
        if i > 0 {
            out.push(b';');
        }
        // The name is read as the `cookie` crate reads it; a segment that is not UTF-8 is read
        // lossily, which cannot make it one of ours unless its name bytes are exactly ours (our
        // names are ASCII), so every copy of our cookies is renewed.
        let text = String::from_utf8_lossy(segment);
        let ours = name_and_value(&text).and_then(|(key, _)| renewed.iter().position(|(n, _)| *n == key));
        match ours.and_then(|k| renewed.get(k).map(|pair| (k, pair))) {
            Some((k, (name, value))) => {
                // Whitespace around the segment is kept; it is whole characters (U+FFFD is not
                // whitespace), so its byte lengths are the same in `text` and in `segment`.
                let trimmed_start = text.trim_start();
                let lead = text.len() - trimmed_start.len();
                let trail = trimmed_start.len() - trimmed_start.trim_end().len();
                out.extend_from_slice(segment.get(..lead).unwrap_or_default());
                for part in [*name, "=", *value] {
                    out.extend_from_slice(part.as_bytes());
                }
                out.extend_from_slice(segment.get(segment.len().saturating_sub(trail)..).unwrap_or_default());
                if let Some(slot) = found.get_mut(k) {
                    *slot = true;
                }
            }
            None => out.extend_from_slice(segment),
        }
    }
    for ((name, value), _) in renewed.iter().zip(&found).filter(|(_, found)| !**found) {
        match out.iter().rev().find(|b| !b.is_ascii_whitespace()) {
            None => {}
            Some(b';') => out.push(b' '),
            Some(_) => out.extend_from_slice(b"; "),
        }
        for part in [*name, "=", *value] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

/// The value of the cookie called `name` in one `Set-Cookie` header value, if that is its name.
/// Read as the `cookie` crate's `Cookie::parse` reads it: the cookie is what comes before the
/// first `;` (the attributes follow), its value as sent (DQUOTEs kept).
pub fn value_in_set_cookie<'s>(set_cookie: &'s str, name: &str) -> Option<&'s str> {
    let cookie = set_cookie.split(';').next().unwrap_or_default();
    name_and_value(cookie).filter(|(key, _)| *key == name).map(|(_, value)| value)
}

/// True when `value` can be a cookie value as is (RFC 6265 `cookie-octet`s, not empty): the
/// login API's tokens are passed on verbatim, so they must not smuggle in attributes.
pub fn is_cookie_value(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CookiePolicy {
        let names = CookieNames {
            access: "accessTokenEtls".into(),
            refresh: "refreshTokenEtls".into(),
            upstream_access: "accessToken".into(),
            upstream_refresh: "refreshToken".into(),
        };
        CookiePolicy::new(names, true, SameSite::Strict, None)
    }

    fn attributes(set_cookie: &str) -> Vec<String> {
        let mut parts: Vec<String> = set_cookie.split("; ").skip(1).map(str::to_owned).collect();
        parts.sort();
        parts
    }

    #[test]
    fn access_cookie_has_every_attribute_and_its_lifetime() {
        let c = policy().set_access("abc.def.ghi", 900);
        assert!(c.starts_with("accessTokenEtls=abc.def.ghi; "), "{c}");
        assert_eq!(attributes(&c), ["HttpOnly", "Max-Age=900", "Path=/", "SameSite=Strict", "Secure"]);
        assert!(policy().set_access("a", 17).ends_with("; Max-Age=17"), "less near the end of the session");
    }

    #[test]
    fn refresh_and_upstream_cookies_live_as_given() {
        let p = policy();
        assert!(p.set_refresh("r", 604_800).contains("Max-Age=604800"));
        let [a, r] = p.set_upstream("ua", "ur", 604_800);
        assert!(a.starts_with("accessToken=ua; ") && a.contains("Max-Age=604800"), "{a}");
        assert!(r.starts_with("refreshToken=ur; ") && r.contains("Max-Age=604800"), "{r}");
        let [a, r] = p.set_upstream("ua", "ur", 20);
        assert!(a.ends_with("; Max-Age=20") && r.ends_with("; Max-Age=20"), "{a} {r}");
    }

    #[test]
    fn clearing_cookies_keep_set_attributes_with_max_age_zero() {
        let mut p = policy();
        p = CookiePolicy::new(p.names.clone(), false, SameSite::Lax, Some("example.com".into()));
        let cleared = p.clear_all();
        assert_eq!(cleared.len(), 4);
        let names: Vec<&str> = cleared.iter().map(|c| c.split('=').next().unwrap()).collect();
        assert_eq!(names, ["accessTokenEtls", "refreshTokenEtls", "accessToken", "refreshToken"]);
        for c in cleared {
            assert!(c.contains("=; "), "{c}");
            assert_eq!(attributes(c), ["Domain=example.com", "HttpOnly", "Max-Age=0", "Path=/", "SameSite=Lax"]);
        }
    }

    #[test]
    fn find_reads_the_first_cookie_of_that_name() {
        let h = b"a=1; accessTokenEtls=tok1; accessTokenEtls=tok2;refreshTokenEtls=r";
        assert_eq!(find(h, "accessTokenEtls"), Some("tok1"));
        assert_eq!(find(h, "refreshTokenEtls"), Some("r"));
        assert_eq!(find(h, "missing"), None);
        assert_eq!(find(b"", "a"), None);
        assert_eq!(find(b";;; =x; ==; accessTokenEtls", "accessTokenEtls"), None);
        assert_eq!(find(b"accessTokenEtlsX=1", "accessTokenEtls"), None);
        // A segment that is not UTF-8 is never ours; the next copy is found.
        assert_eq!(find(b"accessTokenEtls=\xff; accessTokenEtls=good", "accessTokenEtls"), Some("good"));
        assert_eq!(find(b"x=\xfe\xff;accessTokenEtls=t", "accessTokenEtls"), Some("t"));
        // RFC 6265 DQUOTEs around a value are not part of it; a lone quote is.
        assert_eq!(find(b"accessTokenEtls=\"tok\"", "accessTokenEtls"), Some("tok"));
        assert_eq!(find(b"accessTokenEtls=\"", "accessTokenEtls"), Some("\""));
        assert_eq!(find(b"accessTokenEtls=\"tok", "accessTokenEtls"), Some("\"tok"));
    }

    fn renew<'a>(access: &'a str, refresh: &'a str) -> [(&'static str, &'a str); 2] {
        [("accessTokenEtls", access), ("refreshTokenEtls", refresh)]
    }

    #[test]
    fn with_session_replaces_our_cookies_in_place_and_keeps_the_rest() {
        let h = b"theme=dark; accessTokenEtls=old; sid=x; refreshTokenEtls=oldr";
        assert_eq!(with_values(h, &renew("A", "R")), b"theme=dark; accessTokenEtls=A; sid=x; refreshTokenEtls=R");
        assert_eq!(with_values(b"", &renew("A", "R")), b"accessTokenEtls=A; refreshTokenEtls=R");
        assert_eq!(with_values(b"  ", &renew("A", "R")), b"  accessTokenEtls=A; refreshTokenEtls=R");
        assert_eq!(with_values(b"a=1;", &renew("A", "R")), b"a=1; accessTokenEtls=A; refreshTokenEtls=R");
        assert_eq!(with_values(b"refreshTokenEtls=x", &renew("A", "R")), b"refreshTokenEtls=R; accessTokenEtls=A");
    }

    #[test]
    fn with_session_keeps_every_other_byte() {
        // Nameless cookies, non-UTF-8 bytes, odd spacing, empty segments, two copies of ours, a
        // quoted copy and a look-alike name: only the values of our cookies change.
        let h: &[u8] = b"foo; =bar;  accessTokenEtls = old1 ;b=\xff\xfe;;\taccessTokenEtls=\"old2\";accessTokenEtlsX=keep; refreshTokenEtls=r1 ,x=\x80";
        let want: &[u8] = b"foo; =bar;  accessTokenEtls=A ;b=\xff\xfe;;\taccessTokenEtls=A;accessTokenEtlsX=keep; refreshTokenEtls=R";
        let got = with_values(h, &renew("A", "R"));
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&got));
        // Every segment that is not ours is byte for byte the same, in the same order.
        let before: Vec<&[u8]> = h.split(|b| *b == b';').collect();
        let after: Vec<&[u8]> = got.split(|b| *b == b';').collect();
        assert_eq!(before.len(), after.len());
        for (i, segment) in before.iter().enumerate() {
            let ours = [2usize, 5, 7].contains(&i);
            assert_eq!(ours, segment != &after[i], "segment {i}: {:?}", String::from_utf8_lossy(segment));
        }
        // A general list of renewals (the login API's pair too).
        let four = [("accessTokenEtls", "A"), ("refreshTokenEtls", "R"), ("accessToken", "UA"), ("refreshToken", "UR")];
        assert_eq!(with_values(b"refreshToken=o; z=1; accessToken=o", &four),
                   b"refreshToken=UR; z=1; accessToken=UA; accessTokenEtls=A; refreshTokenEtls=R");
    }

    #[test]
    fn oversized_names_the_first_cookie_over_4096_bytes() {
        let p = policy();
        let base = p.set_access("", 900).len();
        let fit = p.set_access(&"v".repeat(4096 - base), 900);
        assert_eq!(fit.len(), 4096);
        assert_eq!(p.oversized(&[fit.clone(), p.set_refresh("r", 604_800)]), None);
        let over = p.set_refresh(&"v".repeat(4097 - p.set_refresh("", 604_800).len()), 604_800);
        assert_eq!(p.oversized(&[fit, over]), Some(("refreshTokenEtls", 4097)));
        let [ua, _] = p.set_upstream(&"u".repeat(5000), "x", 604_800);
        assert_eq!(p.oversized(&[ua]), Some(("accessToken", 5000 + p.set_upstream("", "", 604_800)[0].len())));
        // Attributes count: a domain makes the same value too large.
        let with_domain = CookiePolicy::new(p.names.clone(), true, SameSite::None, Some("example.com".into()));
        let value = "v".repeat(4096 - base);
        assert_eq!(with_domain.oversized(&[with_domain.set_access(&value, 900)]).map(|(n, _)| n), Some("accessTokenEtls"));
    }

    #[test]
    fn set_cookie_values_are_read_by_name() {
        let p = policy();
        assert_eq!(value_in_set_cookie(&p.set_access("tok", 900), "accessTokenEtls"), Some("tok"));
        assert_eq!(value_in_set_cookie(&p.set_access("tok", 900), "refreshTokenEtls"), None);
        assert_eq!(value_in_set_cookie("garbage", "accessTokenEtls"), None);
    }

    /// The `cookie` crate's reading and formatting, which the functions above replaced.
    mod reference {
        use cookie::Cookie;

        /// The crate's attribute for ours.
        fn crate_same_site(same_site: super::SameSite) -> cookie::SameSite {
            match same_site {
                super::SameSite::Strict => cookie::SameSite::Strict,
                super::SameSite::Lax => cookie::SameSite::Lax,
                super::SameSite::None => cookie::SameSite::None,
            }
        }

        /// `find` as it was, on raw bytes: each `;` segment that is UTF-8 parsed by the crate.
        pub fn find_bytes<'h>(header: &'h [u8], name: &str) -> Option<&'h str> {
            header
                .split(|b| *b == b';')
                .filter_map(|segment| Cookie::parse(std::str::from_utf8(segment).ok()?).ok())
                .find(|c| c.name() == name)
                .and_then(|c| c.value_raw())
                .map(|v| v.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')).unwrap_or(v))
        }

        pub fn find<'h>(header: &'h str, name: &str) -> Option<&'h str> {
            let c = Cookie::split_parse(header).filter_map(Result::ok).find(|c| c.name() == name)?;
            let trimmed = c.value_trimmed();
            // value_trimmed borrows the cookie; find's value borrows the header, as value_raw does.
            c.value_raw().map(|raw| if raw.len() == trimmed.len() { raw } else { raw.get(1..raw.len() - 1).unwrap_or(raw) })
        }

        /// `with_values` as it was, reading each segment's name with the crate.
        pub fn with_values(cookie_header: &[u8], renewed: &[(&str, &str)]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut found = vec![false; renewed.len()];
            for (i, segment) in cookie_header.split(|b| *b == b';').enumerate() {
                if i > 0 {
                    out.push(b';');
                }
                let text = String::from_utf8_lossy(segment);
                let ours = Cookie::parse(text.as_ref()).ok().and_then(|c| renewed.iter().position(|(n, _)| *n == c.name()));
                match ours {
                    Some(k) => {
                        let trimmed_start = text.trim_start();
                        let lead = text.len() - trimmed_start.len();
                        let trail = trimmed_start.len() - trimmed_start.trim_end().len();
                        out.extend_from_slice(&segment[..lead]);
                        out.extend_from_slice(format!("{}={}", renewed[k].0, renewed[k].1).as_bytes());
                        out.extend_from_slice(&segment[segment.len() - trail..]);
                        found[k] = true;
                    }
                    None => out.extend_from_slice(segment),
                }
            }
            for ((name, value), _) in renewed.iter().zip(&found).filter(|(_, found)| !**found) {
                match out.iter().rev().find(|b| !b.is_ascii_whitespace()) {
                    None => {}
                    Some(b';') => out.push(b' '),
                    Some(_) => out.extend_from_slice(b"; "),
                }
                out.extend_from_slice(format!("{name}={value}").as_bytes());
            }
            out
        }

        pub fn value_in_set_cookie<'s>(set_cookie: &'s str, name: &str) -> Option<&'s str> {
            Cookie::parse(set_cookie).ok().filter(|c| c.name() == name).and_then(|c| c.value_raw())
        }

        pub fn format(name: &str, value: &str, secure: bool, same_site: super::SameSite, domain: Option<&str>, max_age: i64) -> String {
            let mut c = Cookie::build((name, value)).http_only(true).path("/").secure(secure).same_site(crate_same_site(same_site))
                .max_age(cookie::time::Duration::seconds(max_age));
            if let Some(d) = domain {
                c = c.domain(d);
            }
            c.build().to_string()
        }
    }

    #[test]
    fn reading_and_formatting_match_the_cookie_crate() {
        let headers = [
            "", " ", ";", ";;; =x; ==; accessTokenEtls", "a=1; accessTokenEtls=tok1; accessTokenEtls=tok2;refreshTokenEtls=r",
            "  accessTokenEtls = spaced ;\trefreshTokenEtls=\"quoted\" ", "accessTokenEtls=a=b=c; x", "=v; accessTokenEtls=",
            "accessTokenEtlsX=1; xaccessTokenEtls=2", "\u{a0}accessTokenEtls=nbsp\u{a0}; é=ü; refreshTokenEtls=r\u{2003}",
            "theme=dark; accessTokenEtls=old; sid=x; refreshTokenEtls=oldr", "a;b;c=;d=1",
            // Whitespace the crate trims from names, ASCII and not (find skips a segment by its
            // first bytes before parsing: it must still find these).
            "\u{b}accessTokenEtls=vt; \u{c}refreshTokenEtls=ff", "\r\naccessTokenEtls=crlf", "\u{3000}accessTokenEtls=ideo",
            "\u{85}refreshTokenEtls=nel; \u{2028}accessTokenEtls=ls", "x=1;\u{a0}\u{a0}a=2; é=3",
        ];
        let names = policy().names;
        for h in headers {
            for name in ["accessTokenEtls", "refreshTokenEtls", "a", "c", "", "é"] {
                assert_eq!(find(h.as_bytes(), name), reference::find(h, name), "find {name:?} in {h:?}");
                assert_eq!(value_in_set_cookie(h, name), reference::value_in_set_cookie(h, name), "set-cookie {name:?} in {h:?}");
            }
            // The rewrite changes exactly the values of the cookies the crate reads as ours.
            let renewed = [(names.access.as_str(), "A"), (names.refresh.as_str(), "R")];
            let out = with_values(h.as_bytes(), &renewed);
            let out = std::str::from_utf8(&out).unwrap();
            let read = |header: &str| -> Vec<(String, String)> {
                cookie::Cookie::split_parse(header).filter_map(Result::ok).map(|c| (c.name().to_owned(), c.value_raw().unwrap_or_default().to_owned())).collect()
            };
            let expected: Vec<(String, String)> = read(h).into_iter().map(|(n, v)| match renewed.iter().find(|(r, _)| *r == n) {
                Some((_, new)) => (n, (*new).to_owned()),
                None => (n, v),
            }).collect();
            let got = read(out);
            assert_eq!(&got[..expected.len()], &expected[..], "{h:?} -> {out:?}");
        }
        for (secure, same_site, domain) in [(true, SameSite::Strict, None), (false, SameSite::Lax, Some("example.com")),
                                            (true, SameSite::None, Some(".example.com"))] {
            let p = CookiePolicy::new(names.clone(), secure, same_site, domain.map(str::to_owned));
            assert_eq!(p.set_access("v.w-x_y", 900), reference::format("accessTokenEtls", "v.w-x_y", secure, same_site, domain, 900));
            assert_eq!(p.set_refresh("r", 604_800), reference::format("refreshTokenEtls", "r", secure, same_site, domain, 604_800));
            assert_eq!(p.clear_all()[0], reference::format("accessTokenEtls", "", secure, same_site, domain, 0));
        }
    }

    #[test]
    fn find_reads_long_values_and_every_copy_past_odd_segments() {
        // Values longer than one eight-byte step, `;` at every offset of a step, non-ASCII
        // bytes before and after a `;`, in the name's segment and elsewhere.
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOjQyfQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        for pad in 0..17 {
            let filler = "x".repeat(pad);
            for h in [
                format!("{filler}=1;accessTokenEtls={token};refreshTokenEtls=r{filler}"),
                format!("k={filler}\u{e9};accessTokenEtls= {token} ; z=\u{3000}"),
                format!("accessTokenEtls{filler}=no; accessTokenEtls=\"{token}\""),
                format!("\u{a0}accessTokenEtls\u{a0}= \u{2003}{token}{filler}\u{2003}"),
            ] {
                for name in ["accessTokenEtls", "refreshTokenEtls", "k", "z"] {
                    assert_eq!(find(h.as_bytes(), name), reference::find(&h, name), "{name:?} in {h:?}");
                    assert_eq!(find(h.as_bytes(), name), reference::find_bytes(h.as_bytes(), name), "{name:?} in {h:?}");
                }
            }
            let mut raw = format!("a={filler}").into_bytes();
            raw.extend_from_slice(b"\xff;accessTokenEtls=\xfe");
            raw.extend_from_slice(filler.as_bytes());
            raw.extend_from_slice(b"; accessTokenEtls=second; refreshTokenEtls=\x80\x80");
            for name in ["accessTokenEtls", "refreshTokenEtls", "a"] {
                assert_eq!(find(&raw, name), reference::find_bytes(&raw, name), "{name:?} in {raw:?}");
            }
            assert_eq!(find(&raw, "accessTokenEtls"), Some("second"));
            assert_eq!(find(&raw, "refreshTokenEtls"), None);
        }
    }

    /// Pieces a `Cookie` header is made of here, the tricky ones often.
    fn header_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(b"accessTokenEtls".to_vec()), Just(b"refreshTokenEtls".to_vec()), Just(b"=".to_vec()),
            Just(b";".to_vec()), Just(b"; ".to_vec()), Just(b" ".to_vec()), Just(b"\t".to_vec()), Just(b"\x0b".to_vec()),
            Just(b"\"".to_vec()), Just("\u{a0}".as_bytes().to_vec()), Just("\u{3000}".as_bytes().to_vec()),
            Just("\u{85}".as_bytes().to_vec()), Just("\u{e9}".as_bytes().to_vec()), Just(b"\xff".to_vec()),
            Just(b"\x80".to_vec()), Just(b"\xc3".to_vec()), Just(b"a".to_vec()), Just(b"x".repeat(9)),
            "[ -~]{0,20}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8000))]
        #[test]
        fn find_reads_as_the_cookie_crate_did(pieces in proptest::collection::vec(header_piece(), 0..16)) {
            let header = pieces.concat();
            for name in ["accessTokenEtls", "refreshTokenEtls", "a", "x", ""] {
                proptest::prop_assert_eq!(find(&header, name), reference::find_bytes(&header, name), "{:?} in {:?}", name, header);
            }
            if let Ok(text) = std::str::from_utf8(&header) {
                proptest::prop_assert_eq!(find(&header, "accessTokenEtls"), reference::find(text, "accessTokenEtls"));
                for name in ["accessTokenEtls", "a", "x", ""] {
                    proptest::prop_assert_eq!(value_in_set_cookie(text, name), reference::value_in_set_cookie(text, name));
                }
            }
            let renewed = [("accessTokenEtls", "A"), ("refreshTokenEtls", "R")];
            proptest::prop_assert_eq!(with_values(&header, &renewed), reference::with_values(&header, &renewed));
        }
    }

    #[test]
    fn cookie_values_reject_attribute_smuggling() {
        assert!(is_cookie_value("eyJhbGciOi.abc-_.x"));
        assert!(!is_cookie_value(""));
        assert!(!is_cookie_value("a; Domain=evil"));
        assert!(!is_cookie_value("a,b"));
        assert!(!is_cookie_value("a b"));
        assert!(!is_cookie_value("a\"b"));
        assert!(!is_cookie_value("a\r\nSet-Cookie: x=y"));
    }
}
