//! Building a `RequestView` from the request's header map as the host serializes it (the
//! proxy-wasm ABI's header-map format), so the shell gets every header it needs with one host
//! call and one allocation instead of one of each per header. Pure bytes in, plain data out:
//! no proxy-wasm SDK here.
//!
//! Format (little-endian `u32`s): `count`, then `count` pairs of `(name_len, value_len)`, then
//! for each pair `name NUL value NUL`. A map that does not parse yields no headers at all, which
//! the core treats like a request without a session (fail closed).

use std::borrow::Cow;

use crate::core::request::RequestView;

/// The `(name, value)` pairs of a serialized header map, in order; names are `&str` (the host
/// only serializes valid header names) and values raw bytes. `None` when `map` is malformed.
pub fn parse_header_map(map: &[u8]) -> Option<Vec<(&str, &[u8])>> {
    let count = usize::try_from(read_u32(map, 0)?).ok()?;
    let sizes_len = count.checked_mul(8)?;
    let sizes = map.get(4..4usize.checked_add(sizes_len)?)?;
    let mut data = map.get(4 + sizes_len..)?;
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let name_len = usize::try_from(read_u32(sizes, i * 8)?).ok()?;
        let value_len = usize::try_from(read_u32(sizes, i * 8 + 4)?).ok()?;
        let (name, rest) = split_nul(data, name_len)?;
        let (value, rest) = split_nul(rest, value_len)?;
        pairs.push((std::str::from_utf8(name).ok()?, value));
        data = rest;
    }
    Some(pairs)
}

/// [`request_view`] of a serialized header map, read in one pass without collecting its pairs;
/// a malformed map yields the view of no headers at all, as with [`parse_header_map`].
pub fn request_view_of_map(map: &[u8], end_of_stream: bool) -> RequestView<'_> {
    let mut pairs = OnePass::new(map);
    let view = request_view(&mut pairs, end_of_stream);
    if pairs.failed {
        return request_view([], end_of_stream);
    }
    view
}

/// The pairs of a serialized map, read as they are used; `failed` once the map does not parse
/// (then no more pairs come).
struct OnePass<'a> {
    sizes: &'a [u8],
    data: &'a [u8],
    left: usize,
    failed: bool,
}

impl<'a> OnePass<'a> {
    fn new(map: &'a [u8]) -> Self {
        let start = || -> Option<(usize, &'a [u8], &'a [u8])> {
            let count = usize::try_from(read_u32(map, 0)?).ok()?;
            let sizes_len = count.checked_mul(8)?;
            let sizes = map.get(4..4usize.checked_add(sizes_len)?)?;
            Some((count, sizes, map.get(4 + sizes_len..)?))
        };
        match start() {
            Some((left, sizes, data)) => OnePass { sizes, data, left, failed: false },
            None => OnePass { sizes: &[], data: &[], left: 0, failed: true },
        }
    }

    fn read(&mut self) -> Option<(&'a str, &'a [u8])> {
        let name_len = usize::try_from(read_u32(self.sizes, 0)?).ok()?;
        let value_len = usize::try_from(read_u32(self.sizes, 4)?).ok()?;
        let (name, rest) = split_nul(self.data, name_len)?;
        let (value, rest) = split_nul(rest, value_len)?;
        let name = std::str::from_utf8(name).ok()?;
        self.sizes = self.sizes.get(8..)?;
        self.data = rest;
        Some((name, value))
    }
}

impl<'a> Iterator for OnePass<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.failed {
            return None;
        }
        self.left -= 1;
        let pair = self.read();
        self.failed = pair.is_none();
        pair
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

/// The first `len` bytes of `bytes`, which must be followed by a NUL, and what follows the NUL.
fn split_nul(bytes: &[u8], len: usize) -> Option<(&[u8], &[u8])> {
    let (field, rest) = bytes.split_at_checked(len)?;
    let rest = rest.strip_prefix(b"\0")?;
    Some((field, rest))
}

/// The `RequestView` of these request headers (names lowercase, as Envoy hands them over).
/// Single-valued headers take their first value; several `Cookie` headers are joined with
/// `; ` (HTTP/1.1 clients may split cookies over several) and kept as raw bytes; other values
/// that are not UTF-8 are decoded lossily. `end_of_stream` is true when no body follows.
pub fn request_view<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>, end_of_stream: bool) -> RequestView<'a> {
    let mut view = RequestView { end_of_stream, ..RequestView::default() };
    let (mut method, mut path, mut accept, mut content_length, mut content_type) = (None, None, None, None, None);
    let (mut origin, mut sec_fetch_site, mut authority) = (None, None, None);
    for (name, value) in pairs {
        match name {
            ":method" => first(&mut method, value),
            ":path" => first(&mut path, value),
            "accept" => first(&mut accept, value),
            "content-length" => first(&mut content_length, value),
            "content-type" => first(&mut content_type, value),
            "cookie" => match &mut view.cookie {
                // One Cookie header (HTTP/1.1, most clients): borrowed as it is.
                None => view.cookie = Some(Cow::Borrowed(value)),
                Some(cookie) => {
                    let cookie = cookie.to_mut();
                    if !cookie.is_empty() {
                        cookie.extend_from_slice(b"; ");
                    }
                    cookie.extend_from_slice(value);
                }
            },
            ":authority" => first(&mut authority, value),
            "origin" => first(&mut origin, value),
            "sec-fetch-site" => first(&mut sec_fetch_site, value),
            "access-control-request-method" => view.has_cors_request_method = true,
            _ => {}
        }
    }
    view.has_origin = origin.is_some();
    view.origin = origin.map(Cow::Borrowed);
    view.sec_fetch_site = sec_fetch_site.map(Cow::Borrowed);
    view.authority = authority.map(Cow::Borrowed);
    view.method = method.map(text).unwrap_or_default();
    view.path = path.map(text).unwrap_or_default();
    view.accept = accept.map(text);
    view.content_type = content_type.map(text);
    view.content_length = content_length.and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
    view
}

fn first<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes pairs the way the host does.
    fn map(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend((n.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend(n.as_bytes());
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn a_serialized_map_round_trips() {
        let pairs: Vec<(&str, &[u8])> = vec![(":method", b"GET"), (":path", b"/a?b"), ("cookie", b"x=1"), ("empty", b"")];
        assert_eq!(parse_header_map(&map(&pairs)), Some(pairs));
        assert_eq!(parse_header_map(&map(&[])), Some(vec![]));
    }

    #[test]
    fn one_pass_views_are_the_views_of_the_parsed_pairs() {
        let good = map(&[(":method", b"GET"), (":path", b"/x?y"), ("cookie", b"a=b"), ("cookie", b"c=d"), ("accept", b"text/html")]);
        let whole = request_view(parse_header_map(&good).unwrap(), true);
        assert_eq!(request_view_of_map(&good, true), whole);
        assert_eq!(whole.cookie.as_deref(), Some(&b"a=b; c=d"[..]));
        for cut in 0..good.len() {
            assert_eq!(request_view_of_map(&good[..cut], false), request_view([], false), "cut at {cut}");
        }
        let mut bad_name = good.clone();
        let at = good.len() - b"accept\0text/html\0".len();
        bad_name[at] = 0xff;
        assert_eq!(parse_header_map(&bad_name), None);
        assert_eq!(request_view_of_map(&bad_name, true), request_view([], true), "a bad last name voids the whole map");
    }

    #[test]
    fn malformed_maps_yield_none_without_panicking() {
        let good = map(&[(":path", b"/x"), ("cookie", b"a=b")]);
        for cut in 0..good.len() {
            assert_eq!(parse_header_map(&good[..cut]), None, "cut at {cut}");
        }
        let mut no_nul = good.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert_eq!(parse_header_map(&no_nul), None);
        assert_eq!(parse_header_map(&[0xff, 0xff, 0xff, 0xff]), None, "a huge count");
        let mut bad_len = good.clone();
        bad_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_header_map(&bad_len), None);
    }

    #[test]
    fn the_view_takes_what_the_core_needs() {
        let pairs: Vec<(&str, &[u8])> = vec![
            (":authority", b"example.com"), (":method", b"OPTIONS"), (":path", b"/api?q=1"), ("accept", b"text/html"),
            ("accept", b"application/json"), ("cookie", b"a=1"), ("cookie", b"accessTokenEtls=t"), ("origin", b"https://x"),
            ("access-control-request-method", b"POST"), ("content-length", b" 12 "), ("x-other", b"\xff"),
            ("content-type", b"application/json; charset=utf-8"), ("content-type", b"text/plain"),
        ];
        let view = request_view(pairs, false);
        assert_eq!(view, RequestView {
            method: "OPTIONS".into(),
            path: "/api?q=1".into(),
            cookie: Some(b"a=1; accessTokenEtls=t".to_vec().into()),
            accept: Some("text/html".into()),
            content_type: Some("application/json; charset=utf-8".into()),
            has_origin: true,
            origin: Some(b"https://x".to_vec().into()),
            sec_fetch_site: None,
            authority: Some(b"example.com".to_vec().into()),
            has_cors_request_method: true,
            content_length: Some(12),
            end_of_stream: false,
        });
        let bare = request_view([(":method", &b"GET"[..]), (":path", b"/"), ("content-length", b"x"), ("cookie", b"\xffa=b")], true);
        assert_eq!(bare.cookie.as_deref(), Some(&b"\xffa=b"[..]));
        assert_eq!((bare.accept, bare.content_length, bare.has_origin, bare.end_of_stream), (None, None, false, true));
        assert_eq!(request_view([], true), RequestView { end_of_stream: true, ..RequestView::default() });
    }
}
