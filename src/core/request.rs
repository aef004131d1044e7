//! What the core needs to know about a request, gathered by the shell from the headers.
//! Plain data; no proxy_wasm here.

use std::borrow::Cow;

/// One request as the core sees it. Header values that are not UTF-8 arrive lossily decoded,
/// except the `Cookie` header, which is kept as raw bytes so that a rotation can hand every
/// other cookie to the app byte for byte.
///
/// Borrowed from the header map the shell read (`'a`) where it can be, so the request path
/// copies no header; [`RequestView::into_owned`] makes a copy that outlives the map (for a
/// request that waits on a call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestView<'a> {
    /// `:method`, as sent.
    pub method: Cow<'a, str>,
    /// `:path`, with its query string.
    pub path: Cow<'a, str>,
    /// The `Cookie` header, raw bytes (several `Cookie` headers are joined with `; `).
    pub cookie: Option<Cow<'a, [u8]>>,
    /// The `Accept` header.
    pub accept: Option<Cow<'a, str>>,
    /// The `Content-Type` header (the first one).
    pub content_type: Option<Cow<'a, str>>,
    /// Whether an `Origin` header is present.
    pub has_origin: bool,
    /// The `Origin` header (the first one), raw bytes: read only on the filter's routes
    /// (`core::origin`).
    pub origin: Option<Cow<'a, [u8]>>,
    /// The `Sec-Fetch-Site` header (the first one), raw bytes (`core::origin`).
    pub sec_fetch_site: Option<Cow<'a, [u8]>>,
    /// `:authority` (the Host header in HTTP/1.1), raw bytes (`core::origin`).
    pub authority: Option<Cow<'a, [u8]>>,
    /// Whether an `Access-Control-Request-Method` header is present.
    pub has_cors_request_method: bool,
    /// `Content-Length`, when present and a number.
    pub content_length: Option<u64>,
    /// True when the headers end the request (no body follows).
    pub end_of_stream: bool,
}

impl RequestView<'_> {
    /// A copy that borrows nothing.
    pub fn into_owned(self) -> RequestView<'static> {
        RequestView {
            method: Cow::Owned(self.method.into_owned()),
            path: Cow::Owned(self.path.into_owned()),
            cookie: self.cookie.map(|c| Cow::Owned(c.into_owned())),
            accept: self.accept.map(|a| Cow::Owned(a.into_owned())),
            content_type: self.content_type.map(|c| Cow::Owned(c.into_owned())),
            has_origin: self.has_origin,
            origin: self.origin.map(|o| Cow::Owned(o.into_owned())),
            sec_fetch_site: self.sec_fetch_site.map(|s| Cow::Owned(s.into_owned())),
            authority: self.authority.map(|a| Cow::Owned(a.into_owned())),
            has_cors_request_method: self.has_cors_request_method,
            content_length: self.content_length,
            end_of_stream: self.end_of_stream,
        }
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        let path: &str = &self.path;
        path.split_once('?').map_or(path, |(path, _)| path)
    }

    /// True when the `Accept` header lists `text/html`: a page load, which is redirected.
    pub fn accepts_html(&self) -> bool {
        self.accept.as_deref().is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or_default().trim();
                let refused = parts.any(|p| {
                    p.trim().split_once('=').is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
                });
                media.eq_ignore_ascii_case("text/html") && !refused
            })
        })
    }

    /// True when `Content-Type` is `application/json`, in any case, with or without
    /// parameters (`application/json; charset=utf-8`). A missing one is not JSON.
    pub fn has_json_body(&self) -> bool {
        self.content_type.as_deref().is_some_and(|value| {
            let media = value.split_once(';').map_or(value, |(media, _)| media);
            media.trim_matches([' ', '\t']).eq_ignore_ascii_case("application/json")
        })
    }

    /// True for a CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_cors_preflight(&self) -> bool {
        self.method == "OPTIONS" && self.has_origin && self.has_cors_request_method
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(accept: &str) -> RequestView<'_> {
        RequestView { accept: Some(accept.into()), ..RequestView::default() }
    }

    #[test]
    fn accept_lists_html_only_when_text_html_is_named() {
        assert!(with_accept("text/html,application/xhtml+xml,*/*;q=0.8").accepts_html());
        assert!(with_accept("application/json, TEXT/HTML;q=0.5").accepts_html());
        assert!(!with_accept("application/json").accepts_html());
        assert!(!with_accept("*/*").accepts_html());
        assert!(!with_accept("text/html;q=0").accepts_html());
        assert!(!with_accept("text/htmlx").accepts_html());
        assert!(!RequestView::default().accepts_html());
    }

    #[test]
    fn json_content_type_allows_parameters_and_any_case() {
        let with = |ct: &str| RequestView { content_type: Some(ct.to_owned().into()), ..RequestView::default() };
        for ok in ["application/json", "application/json; charset=utf-8", "Application/JSON", "APPLICATION/JSON;charset=UTF-8",
                   " application/json ", "application/json\t; x=y"] {
            assert!(with(ok).has_json_body(), "{ok:?}");
        }
        for refused in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "",
                        "application/json-patch+json", "application/jsonx", "application/ld+json", "text/json",
                        "application/json, text/plain", "application /json", "\u{fffd}application/json"] {
            assert!(!with(refused).has_json_body(), "{refused:?}");
        }
        assert!(!RequestView::default().has_json_body(), "missing");
    }

    #[test]
    fn query_is_not_part_of_the_path() {
        let req = RequestView { path: "/a/b?x=1?y".into(), ..RequestView::default() };
        assert_eq!(req.path_only(), "/a/b");
    }

    #[test]
    fn preflight_needs_options_origin_and_request_method() {
        let mut req = RequestView { method: "OPTIONS".into(), has_origin: true, has_cors_request_method: true, ..RequestView::default() };
        assert!(req.is_cors_preflight());
        req.has_cors_request_method = false;
        assert!(!req.is_cors_preflight());
        req = RequestView { method: "GET".into(), has_origin: true, has_cors_request_method: true, ..RequestView::default() };
        assert!(!req.is_cors_preflight());
    }
}
