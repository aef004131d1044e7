//! A native driver of the valid-session path for profiling (not a test; `CASE=forged` drives the
//! deny of a forged token instead): the serialized request
//! header map Envoy hands the filter, parsed into a `RequestView` and decided through a warm
//! token cache, `ITERATIONS` (env, default 100000) times. Prints heap allocations per request.
//! Instruction counts: `valgrind --tool=callgrind target/release/examples/valid_path` with
//! ITERATIONS=0 and =10000, the difference divided by 10000.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use etls_auth::config::Config;
use etls_auth::core::cache::TokenCache;
use etls_auth::core::tokens::{self, Identity};
use etls_auth::core::{decide_cached, headers};
use serde_json::json;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NOW: u64 = 1_790_000_000;

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

fn main() {
    let env = |name: &str| match name {
        "ETLS_ACCESS" => Some(b"bench-access-secret-0123456789abcdef".to_vec()),
        "ETLS_REFRESH" => Some(b"bench-refresh-secret-0123456789abcdef".to_vec()),
        _ => None,
    };
    let Ok(cfg) = Config::parse(br#"{"login_cluster":"login_api"}"#, env) else { return };
    let Some(identity) = Identity::new(json!(42), Some(json!("admin"))) else { return };
    let Ok(pair) = tokens::mint_pair(&cfg, &identity, NOW, NOW) else { return };
    // CASE=forged: a token signed with another key (verified, refused and denied every time).
    let forged = match Config::parse(br#"{"login_cluster":"login_api"}"#, |name: &str| match name {
        "ETLS_ACCESS" => Some(b"attacker-access-secret-0123456789abcdef".to_vec()),
        "ETLS_REFRESH" => Some(b"attacker-refresh-secret-0123456789abcde".to_vec()),
        _ => None,
    }) {
        Ok(other) => tokens::mint_pair(&other, &identity, NOW, NOW).map(|p| p.access).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let cookie = match std::env::var("CASE").as_deref() {
        Ok("forged") => format!("theme=dark; accessTokenEtls={forged}"),
        _ => format!("theme=dark; accessTokenEtls={}; refreshTokenEtls={}", pair.access, pair.refresh),
    };
    let serialized = map(&[
        (":authority", b"127.0.0.1:10000"),
        (":path", b"/app"),
        (":method", b"GET"),
        (":scheme", b"http"),
        ("cookie", cookie.as_bytes()),
        ("x-forwarded-proto", b"http"),
        ("x-request-id", b"6f1c4c1e-6a53-4b8e-9a7e-4f2b0f0f3c11"),
    ]);
    let mut cache = TokenCache::default();
    let iterations: usize = std::env::var("ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let run = |cache: &mut TokenCache| {
        let view = headers::request_view_of_map(black_box(&serialized), true);
        black_box(decide_cached(&cfg, cache, &view, NOW));
    };
    run(&mut cache); // warm: the token is cached from here on
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..iterations {
        run(&mut cache);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    println!("{iterations} valid-session requests, {:.2} heap allocations each", allocs as f64 / iterations.max(1) as f64);
}
