//! Native micro-benchmarks of the pure core: the work the filter does per request, without
//! Envoy or Wasm around it. `cargo bench --bench core` (criterion; reports under
//! target/criterion/). The Envoy-level benchmark is bench/run.sh.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use etls_auth::config::Config;
use etls_auth::core::cache::TokenCache;
use etls_auth::core::request::RequestView;
use etls_auth::core::tokens::{self, Identity, TokenKind};
use etls_auth::core::{cookies, decide, decide_cached, headers};
use serde_json::json;

const NOW: u64 = 1_790_000_000;

fn config_with(access: &[u8], refresh: &[u8]) -> Config {
    let (access, refresh) = (access.to_vec(), refresh.to_vec());
    let env = move |name: &str| match name {
        "ETLS_ACCESS" => Some(access.clone()),
        "ETLS_REFRESH" => Some(refresh.clone()),
        _ => None,
    };
    match Config::parse(br#"{"login_cluster":"login_api"}"#, env) {
        Ok(cfg) => cfg,
        Err(e) => unreachable!("bench config: {e}"),
    }
}

struct Fixture {
    cfg: Config,
    valid: String,
    expired: String,
    refresh: String,
    forged: String,
}

fn fixture() -> Fixture {
    let cfg = config_with(b"bench-access-secret-0123456789abcdef", b"bench-refresh-secret-0123456789abcdef");
    let attacker = config_with(b"attacker-access-secret-0123456789abc", b"attacker-refresh-secret-0123456789ab");
    let identity = Identity::new(json!(42), Some(json!("admin"))).unwrap_or_else(|| unreachable!());
    let mint = |cfg: &Config, now| tokens::mint_pair(cfg, &identity, now, now).unwrap_or_else(|e| unreachable!("{e}"));
    let pair = mint(&cfg, NOW);
    Fixture {
        valid: pair.access,
        refresh: pair.refresh,
        expired: mint(&cfg, NOW - 3600).access,
        forged: mint(&attacker, NOW).access,
        cfg,
    }
}

fn request(cookie: Option<String>) -> RequestView<'static> {
    RequestView { method: "GET".into(), path: "/app/dashboard?tab=1".into(), cookie: cookie.map(|c| c.into_bytes().into()), end_of_stream: true, ..RequestView::default() }
}

/// A browser-like Cookie header: some analytics cookies around ours.
fn browser_cookie(access: &str, refresh: &str) -> String {
    format!("_ga=GA1.1.123456789.1700000000; theme=dark; accessTokenEtls={access}; _gid=GA1.1.987654321; refreshTokenEtls={refresh}; lang=en")
}

fn serialized_headers(cookie: &str) -> Vec<u8> {
    let pairs: [(&str, &str); 9] = [
        (":authority", "app.example.com"), (":path", "/app/dashboard?tab=1"), (":method", "GET"), (":scheme", "https"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"), ("accept-language", "en-US,en;q=0.9"),
        ("cookie", cookie), ("x-request-id", "8f14e45f-ceea-467f-a0e6-b9a1c2f8e1d2"),
    ];
    let len = |s: &str| u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = len(&"x".repeat(pairs.len())).to_vec();
    for (n, v) in pairs {
        out.extend(len(n));
        out.extend(len(v));
    }
    for (n, v) in pairs {
        out.extend(n.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out
}

fn bench_cookies(c: &mut Criterion) {
    let f = fixture();
    let header = browser_cookie(&f.valid, &f.refresh);
    let names = &f.cfg.cookies.names;
    c.bench_function("cookies/find_access_in_browser_header", |b| b.iter(|| cookies::find(black_box(header.as_bytes()), &names.access)));
    c.bench_function("cookies/with_session", |b| b.iter(|| cookies::with_values(black_box(header.as_bytes()), &[(&names.access, &f.valid), (&names.refresh, &f.refresh)])));
    c.bench_function("cookies/set_access", |b| b.iter(|| f.cfg.cookies.set_access(black_box(&f.valid), 900)));
}

fn bench_headers(c: &mut Criterion) {
    let f = fixture();
    let map = serialized_headers(&browser_cookie(&f.valid, &f.refresh));
    c.bench_function("headers/parse_map_and_build_view", |b| {
        b.iter(|| headers::request_view(headers::parse_header_map(black_box(&map)).unwrap_or_default(), true))
    });
}

fn bench_tokens(c: &mut Criterion) {
    let f = fixture();
    let identity = Identity::new(json!(42), Some(json!("admin"))).unwrap_or_else(|| unreachable!());
    c.bench_function("tokens/verify_hs256", |b| b.iter(|| tokens::verify(&f.cfg, TokenKind::Access, black_box(&f.valid), NOW)));
    c.bench_function("tokens/verify_forged", |b| b.iter(|| tokens::verify(&f.cfg, TokenKind::Access, black_box(&f.forged), NOW)));
    let mut cache = TokenCache::default();
    c.bench_function("tokens/verify_cached_hit", |b| {
        b.iter(|| tokens::verify_cached(&f.cfg, &mut cache, TokenKind::Access, black_box(&f.valid), NOW))
    });
    c.bench_function("tokens/mint_pair", |b| b.iter(|| tokens::mint_pair(&f.cfg, black_box(&identity), NOW, NOW)));
}

fn bench_decide(c: &mut Criterion) {
    let f = fixture();
    let valid = request(Some(browser_cookie(&f.valid, &f.refresh)));
    let rotate = request(Some(browser_cookie(&f.expired, &f.refresh)));
    let forged = request(Some(format!("accessTokenEtls={}", f.forged)));
    let none = request(None);
    let mut cache = TokenCache::default();
    c.bench_function("decide/valid_session_cached", |b| b.iter(|| decide_cached(&f.cfg, &mut cache, black_box(&valid), NOW)));
    c.bench_function("decide/valid_session_uncached", |b| b.iter(|| decide(&f.cfg, black_box(&valid), NOW)));
    c.bench_function("decide/rotate_inline_cached", |b| b.iter(|| decide_cached(&f.cfg, &mut cache, black_box(&rotate), NOW)));
    c.bench_function("decide/deny_no_cookie", |b| b.iter(|| decide_cached(&f.cfg, &mut cache, black_box(&none), NOW)));
    c.bench_function("decide/deny_forged", |b| b.iter(|| decide_cached(&f.cfg, &mut cache, black_box(&forged), NOW)));
}

criterion_group!(benches, bench_cookies, bench_headers, bench_tokens, bench_decide);
criterion_main!(benches);
