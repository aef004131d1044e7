//! `auth_time` through every path that mints tokens (login, inline rotation, the refresh route,
//! the refresh cluster's answer, rotations with `login_refresh_path`): the exact `exp` and
//! `Max-Age` caps, the boundary at `auth_time + max_session_s` with and without the leeway, and
//! tokens minted the jose way with and without `iat` and `auth_time`.

use serde_json::{json, Value};

use crate::config::Config;
use crate::core::decision::{CallKind, Decision, Outcome, UpstreamReply};
use crate::core::shared_calls::testing::MemShared;
use crate::core::testing::*;
use crate::core::upstream::{RefreshAnswer, Renewal};
use crate::core::upstream_session::{self, Rotation};
use crate::core::{decide, login, on_reply};

/// max_session_s 60, access_ttl_s 10, refresh_ttl_s 30, clock_skew_s 5 (the default).
fn small(extra: Value) -> Config {
    let mut base = json!({"max_session_s": 60, "access_ttl_s": 10, "refresh_ttl_s": 30});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    config_with(base)
}

/// A Set-Cookie as (name, value, Max-Age).
fn parse(set_cookie: &str) -> (String, String, u64) {
    let (pair, attributes) = set_cookie.split_once("; ").unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    let max_age = attributes.split("; ").find_map(|a| a.strip_prefix("Max-Age=")).unwrap().parse().unwrap();
    (name.to_owned(), value.to_owned(), max_age)
}

fn set_cookies(d: &Decision) -> Vec<(String, String, u64)> {
    let raw: Vec<String> = match d {
        Decision::Forward(f) => f.set_cookies.clone(),
        Decision::Respond(r) => r.headers().iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.clone()).collect(),
        other => panic!("{other:?}"),
    };
    raw.iter().map(|c| parse(c)).collect()
}

fn outcome(d: &Decision) -> (Outcome, u32) {
    match d {
        Decision::Forward(f) => (f.outcome, 0),
        Decision::Respond(r) => (r.outcome, r.status),
        other => panic!("{other:?}"),
    }
}

/// The ETLS pair of a decision: each token's (iat, auth_time, exp) and its cookie's Max-Age.
fn etls(d: &Decision) -> [(u64, u64, u64, u64); 2] {
    let cookies = set_cookies(d);
    let find = |name: &str| {
        let (_, value, max_age) = cookies.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("no {name} in {cookies:?}"));
        let p = payload(value);
        (p["iat"].as_u64().unwrap(), p["auth_time"].as_u64().unwrap(), p["exp"].as_u64().unwrap(), *max_age)
    };
    [find("accessTokenEtls"), find("refreshTokenEtls")]
}

fn max_age_of(d: &Decision, name: &str) -> u64 {
    set_cookies(d).into_iter().find(|(n, _, _)| n == name).map(|(_, _, m)| m).unwrap()
}

/// A refresh token of user 42 with these claims (`None` leaves a claim out).
fn refresh_token(auth_time: Option<u64>, iat: Option<u64>, exp: u64) -> String {
    let mut claims = json!({"userId": 42, "role": "admin"});
    if let Some(t) = auth_time {
        claims["auth_time"] = json!(t);
    }
    token(REFRESH_SECRET, claims, iat, Some(exp))
}

fn access_token(auth_time: Option<u64>, iat: Option<u64>, exp: u64) -> String {
    let mut claims = json!({"userId": 42, "role": "admin"});
    if let Some(t) = auth_time {
        claims["auth_time"] = json!(t);
    }
    token(ACCESS_SECRET, claims, iat, Some(exp))
}

fn protected(refresh: &str) -> crate::core::request::RequestView<'static> {
    req("GET", "/app", Some(&format!("theme=dark; refreshTokenEtls={refresh}; accessToken=ua; refreshToken=ur")))
}

fn refresh_route(refresh: &str) -> crate::core::request::RequestView<'static> {
    req("POST", "/api/auth/refreshtoken", Some(&format!("refreshTokenEtls={refresh}; refreshToken=ur")))
}

fn login_answer(cfg: &Config, now: u64) -> Decision {
    let body = br#"{"accessToken":"ua","refreshToken":"ur","userData":{"id":42,"role":"admin"}}"#.to_vec();
    let reply = UpstreamReply { status: 200, headers: vec![], body_size: body.len(), body };
    login::on_reply(cfg, Ok(reply), now)
}

#[test]
fn login_starts_the_session_and_every_cookie_lives_as_long_as_its_token() {
    let d = login_answer(&small(json!({})), NOW);
    assert_eq!(outcome(&d), (Outcome::LoginSucceeded, 200));
    assert_eq!(etls(&d), [(NOW, NOW, NOW + 10, 10), (NOW, NOW, NOW + 30, 30)]);
    assert_eq!((max_age_of(&d, "accessToken"), max_age_of(&d, "refreshToken")), (30, 30));
    // A session shorter than refresh_ttl_s: the refresh token and the login API's cookies stop at its end.
    let d = login_answer(&small(json!({"max_session_s": 20})), NOW);
    assert_eq!(etls(&d), [(NOW, NOW, NOW + 10, 10), (NOW, NOW, NOW + 20, 20)]);
    assert_eq!((max_age_of(&d, "accessToken"), max_age_of(&d, "refreshToken")), (20, 20));
    // max_session_s equal to access_ttl_s.
    let d = login_answer(&small(json!({"max_session_s": 10})), NOW);
    assert_eq!(etls(&d), [(NOW, NOW, NOW + 10, 10), (NOW, NOW, NOW + 10, 10)]);
    // The defaults.
    let d = login_answer(&config(), NOW);
    assert_eq!(etls(&d), [(NOW, NOW, NOW + 900, 900), (NOW, NOW, NOW + 604_800, 604_800)]);
    assert_eq!(max_age_of(&d, "refreshToken"), 604_800);
}

#[test]
fn inline_rotation_carries_auth_time_and_caps_exp_and_max_age() {
    let cfg = small(json!({}));
    // 40 s into the session: the access token gets its 10 s, the refresh token the 20 s left.
    let d = decide(&cfg, &protected(&refresh_token(Some(NOW - 40), Some(NOW - 5), NOW + 25)), NOW);
    assert_eq!(outcome(&d), (Outcome::RotatedInline, 0));
    assert_eq!(etls(&d), [(NOW, NOW - 40, NOW + 10, 10), (NOW, NOW - 40, NOW + 20, 20)]);
    // 55 s in: both stop at the end.
    let d = decide(&cfg, &protected(&refresh_token(Some(NOW - 55), Some(NOW - 1), NOW + 5)), NOW);
    assert_eq!(etls(&d), [(NOW, NOW - 55, NOW + 5, 5), (NOW, NOW - 55, NOW + 5, 5)]);
    // The rotated tokens rotate again with the same auth_time.
    let Decision::Forward(f) = &d else { panic!() };
    let (_, again, _) = parse(&f.set_cookies[1]);
    let d = decide(&cfg, &protected(&again), NOW + 2);
    assert_eq!(etls(&d), [(NOW + 2, NOW - 55, NOW + 5, 3), (NOW + 2, NOW - 55, NOW + 5, 3)]);
}

#[test]
fn the_boundary_at_auth_time_plus_max_session_s_whatever_exp_says() {
    let cfg = small(json!({}));
    let end = NOW; // auth_time NOW - 60
    let far = NOW + 100_000; // an exp that would not stop the session (minted elsewhere)
    let a = access_token(Some(end - 60), Some(end - 1), far);
    let with_access = |now: u64| decide(&cfg, &req("GET", "/app", Some(&format!("accessTokenEtls={a}"))), now);
    assert_eq!(outcome(&with_access(end)), (Outcome::SessionValid, 0));
    assert_eq!(outcome(&with_access(end + 5)), (Outcome::SessionValid, 0), "end + skew: still valid");
    let denied = with_access(end + 6);
    assert_eq!(outcome(&denied), (Outcome::DeniedMaxSession, 401), "end + skew + 1: ended");
    assert_eq!(set_cookies(&denied).iter().map(|(_, _, m)| *m).collect::<Vec<_>>(), [0, 0, 0, 0], "four clearing cookies");
    // The refresh token: one second before the end a rotation still mints (1 s left)...
    let r = refresh_token(Some(end - 60), Some(end - 30), far);
    assert_eq!(etls(&decide(&cfg, &protected(&r), end - 1)), [(end - 1, end - 60, end, 1), (end - 1, end - 60, end, 1)]);
    // ...from the end on nothing can be minted (it would be born expired): the session ends,
    // though the token itself is valid until end + skew.
    for now in [end, end + 5, end + 6, end + 1000] {
        assert_eq!(outcome(&decide(&cfg, &protected(&r), now)), (Outcome::DeniedMaxSession, 401), "now = end + {}", now - end);
    }
    // Without the leeway, the end itself is the last valid second.
    let strict = small(json!({"clock_skew_s": 0}));
    let with_access = |now: u64| decide(&strict, &req("GET", "/app", Some(&format!("accessTokenEtls={a}"))), now);
    assert_eq!(outcome(&with_access(end)), (Outcome::SessionValid, 0));
    assert_eq!(outcome(&with_access(end + 1)), (Outcome::DeniedMaxSession, 401));
    // An expired access token of a session still going: a plain rotation, as before.
    let idle = access_token(Some(end - 60), Some(end - 20), end - 10);
    let cookie = format!("accessTokenEtls={idle}; refreshTokenEtls={}", refresh_token(Some(end - 60), Some(end - 20), end + 10));
    assert_eq!(outcome(&decide(&cfg, &req("GET", "/app", Some(&cookie)), end - 3)), (Outcome::RotatedInline, 0));
    // An idle session (refresh token past its own exp, well before the end) is not counted as
    // ended by max_session_s.
    let stale = refresh_token(Some(end - 60), Some(end - 50), end - 20);
    assert_eq!(outcome(&decide(&cfg, &protected(&stale), end - 10)), (Outcome::DeniedRefreshInvalid, 401));
}

#[test]
fn the_refresh_route_carries_auth_time_and_refuses_an_ended_session() {
    let cfg = small(json!({}));
    let d = decide(&cfg, &refresh_route(&refresh_token(Some(NOW - 40), Some(NOW - 5), NOW + 25)), NOW);
    assert_eq!(outcome(&d), (Outcome::Refreshed, 200));
    assert_eq!(etls(&d), [(NOW, NOW - 40, NOW + 10, 10), (NOW, NOW - 40, NOW + 20, 20)]);
    for (auth_time, what) in [(NOW - 60, "at the end"), (NOW - 66, "past end + skew")] {
        let Decision::Respond(r) = decide(&cfg, &refresh_route(&refresh_token(Some(auth_time), Some(NOW - 1), NOW + 500)), NOW) else { panic!() };
        assert_eq!((r.outcome, r.status, r.body.as_slice()), (Outcome::DeniedMaxSession, 401, &br#"{"error":"Invalid refresh token"}"#[..]), "{what}");
    }
}

#[test]
fn the_refresh_cluster_answer_keeps_auth_time_and_its_cookies_the_tokens_lifetimes() {
    let cfg = small(json!({"refresh_cluster": "etls_refresh"}));
    let request = protected(&refresh_token(Some(NOW - 40), Some(NOW - 5), NOW + 25));
    let Decision::Call(call) = decide(&cfg, &request, NOW) else { panic!() };
    // The cluster is this filter's own refresh route: feed it the call, then its answer back.
    let cookie = call.headers.iter().find(|(n, _)| n == "cookie").map(|(_, v)| v.clone()).unwrap();
    let Decision::Respond(answer) = decide(&cfg, &req("POST", "/api/auth/refreshtoken", Some(&cookie)), NOW) else { panic!() };
    let reply = UpstreamReply {
        status: answer.status,
        headers: answer.headers().iter().map(|(n, v)| (n.clone(), v.clone().into_bytes())).collect(),
        body_size: answer.body.len(),
        body: answer.body.clone(),
    };
    let d = on_reply(&cfg, CallKind::Refresh, &request, Ok(reply), NOW);
    assert_eq!(outcome(&d), (Outcome::RotatedByCluster, 0));
    assert_eq!(etls(&d), [(NOW, NOW - 40, NOW + 10, 10), (NOW, NOW - 40, NOW + 20, 20)]);
    // An ended session makes no call at all.
    let ended = protected(&refresh_token(Some(NOW - 60), Some(NOW - 5), NOW + 25));
    assert_eq!(outcome(&decide(&cfg, &ended, NOW)), (Outcome::DeniedMaxSession, 401));
}

fn join(cfg: &Config, request: &crate::core::request::RequestView) -> Rotation {
    match decide(cfg, request, NOW) {
        Decision::Join(rotation) => *rotation,
        other => panic!("{other:?}"),
    }
}

#[test]
fn login_refresh_path_rotations_carry_auth_time_renewed_or_in_an_outage() {
    let cfg = small(json!({"login_refresh_path": "/refresh"}));
    let renewed = RefreshAnswer::Renewed(Renewal { access_token: "ua2".into(), refresh_token: Some("ur2".into()), identity: None });
    for request in [protected(&refresh_token(Some(NOW - 40), Some(NOW - 5), NOW + 25)), refresh_route(&refresh_token(Some(NOW - 40), Some(NOW - 5), NOW + 25))] {
        let rotation = join(&cfg, &request);
        assert_eq!(rotation.auth_time, NOW - 40);
        // Renewed: the login API's two cookies live as long as the new refresh token.
        let d = upstream_session::settle(&cfg, &rotation, &renewed, NOW + 1);
        assert_eq!(etls(&d), [(NOW + 1, NOW - 40, NOW + 11, 10), (NOW + 1, NOW - 40, NOW + 20, 19)]);
        assert_eq!((max_age_of(&d, "accessToken"), max_age_of(&d, "refreshToken")), (19, 19));
        // Outage: the ETLS pair only, same caps.
        let d = upstream_session::settle(&cfg, &rotation, &RefreshAnswer::Outage, NOW + 1);
        assert_eq!(etls(&d), [(NOW + 1, NOW - 40, NOW + 11, 10), (NOW + 1, NOW - 40, NOW + 20, 19)]);
        assert_eq!(set_cookies(&d).len(), 2);
        // The session reached its end while the login API was asked: it ends, whatever the answer.
        for answer in [&renewed, &RefreshAnswer::Outage] {
            let (o, status) = outcome(&upstream_session::settle(&cfg, &rotation, answer, NOW + 20));
            assert_eq!((o, status), (Outcome::DeniedMaxSession, 401));
        }
    }
    // An ended session never asks the login API.
    let ended = protected(&refresh_token(Some(NOW - 61), Some(NOW - 5), NOW + 25));
    assert_eq!(outcome(&decide(&cfg, &ended, NOW)), (Outcome::DeniedMaxSession, 401));
    // Through the shared store, across two VMs of one Envoy: a rotation on VM 2 waits on VM 1's
    // call, and each settles with its own session's auth_time.
    let shared = MemShared::default();
    let mut vm1 = upstream_session::UpstreamCalls::new(1);
    let mut vm2 = upstream_session::UpstreamCalls::new(2);
    let cookie = |refresh: &str| format!("accessTokenEtls={}; refreshTokenEtls={refresh}; accessToken=ua; refreshToken=ur-shared", access(NOW - 100));
    let first = join(&cfg, &req("GET", "/a", Some(&cookie(&refresh_token(Some(NOW - 40), Some(NOW - 5), NOW + 25)))));
    let second = join(&cfg, &req("GET", "/b", Some(&cookie(&refresh_token(Some(NOW - 50), Some(NOW - 5), NOW + 25)))));
    assert!(matches!(vm1.join(&cfg, &shared, 1, first, NOW * 1000), upstream_session::Joined::Wait { .. }));
    assert!(matches!(vm2.join(&cfg, &shared, 2, second, NOW * 1000 + 1), upstream_session::Joined::Wait { .. }));
    let queued = vm1.take_queued();
    let (id, _) = queued.first().unwrap();
    vm1.dispatched(&cfg, &shared, *id, Ok(9), NOW * 1000 + 2);
    assert!(vm2.take_queued().is_empty(), "one call for both VMs");
    let body = br#"{"accessToken":"ua2","refreshToken":"ur2"}"#.to_vec();
    let reply = UpstreamReply { status: 200, headers: vec![], body_size: body.len(), body };
    let settled = vm1.on_answer(&cfg, &shared, 9, Ok(&reply), NOW * 1000 + 500);
    let (_, d) = settled.decisions.first().unwrap();
    assert_eq!(etls(d), [(NOW, NOW - 40, NOW + 10, 10), (NOW, NOW - 40, NOW + 20, 20)]);
    assert_eq!((max_age_of(d, "accessToken"), max_age_of(d, "refreshToken")), (20, 20));
    let settled = vm2.tick(&cfg, &shared, NOW * 1000 + 600);
    let (_, d) = settled.decisions.first().unwrap();
    assert_eq!(etls(d), [(NOW, NOW - 50, NOW + 10, 10), (NOW, NOW - 50, NOW + 10, 10)]);
    // A later rotation reuses the answer, on either VM, with its own auth_time.
    let again = join(&cfg, &req("GET", "/c", Some(&cookie(&refresh_token(Some(NOW - 45), Some(NOW - 5), NOW + 25)))));
    let upstream_session::Joined::Now { decision, .. } = vm2.join(&cfg, &shared, 3, again, NOW * 1000 + 3000) else { panic!() };
    assert_eq!(etls(&decision), [(NOW + 3, NOW - 45, NOW + 13, 10), (NOW + 3, NOW - 45, NOW + 15, 12)]);
}

#[test]
fn jose_tokens_count_from_iat_or_from_the_rotation_that_first_sees_them() {
    let cfg = small(json!({}));
    // The Next.js app's refresh token: no iat, no auth_time. The rotation starts the count.
    let bare = refresh_token(None, None, NOW + 500);
    let d = decide(&cfg, &protected(&bare), NOW);
    assert_eq!(etls(&d), [(NOW, NOW, NOW + 10, 10), (NOW, NOW, NOW + 30, 30)]);
    let d = decide(&cfg, &refresh_route(&bare), NOW);
    assert_eq!(etls(&d), [(NOW, NOW, NOW + 10, 10), (NOW, NOW, NOW + 30, 30)]);
    // With iat but no auth_time (an earlier version of the filter): counts from iat.
    let old = refresh_token(None, Some(NOW - 45), NOW + 500);
    assert_eq!(etls(&decide(&cfg, &protected(&old), NOW)), [(NOW, NOW - 45, NOW + 10, 10), (NOW, NOW - 45, NOW + 15, 15)]);
    let older = refresh_token(None, Some(NOW - 66), NOW + 500);
    assert_eq!(outcome(&decide(&cfg, &protected(&older), NOW)), (Outcome::DeniedMaxSession, 401));
    // jose access tokens: without iat only exp counts; with iat the session began then.
    let jose_access = |iat: Option<u64>| req("GET", "/app", Some(&format!("accessTokenEtls={}", access_token(None, iat, NOW + 500))));
    assert_eq!(outcome(&decide(&cfg, &jose_access(None), NOW)), (Outcome::SessionValid, 0));
    assert_eq!(outcome(&decide(&cfg, &jose_access(Some(NOW - 65)), NOW)), (Outcome::SessionValid, 0));
    assert_eq!(outcome(&decide(&cfg, &jose_access(Some(NOW - 66)), NOW)), (Outcome::DeniedMaxSession, 401));
    // With auth_time and no iat (minted by hand): auth_time counts.
    let no_iat = refresh_token(Some(NOW - 40), None, NOW + 500);
    assert_eq!(etls(&decide(&cfg, &protected(&no_iat), NOW)), [(NOW, NOW - 40, NOW + 10, 10), (NOW, NOW - 40, NOW + 20, 20)]);
}

#[test]
fn auth_time_must_be_an_integer_in_the_past() {
    let cfg = small(json!({}));
    for bad in [json!("1790000000"), json!(1.5e9), json!(-1), json!(null), json!({"t": 1})] {
        let mut claims = json!({"userId": 42, "auth_time": bad.clone()});
        if bad.is_null() {
            // null counts as absent.
            claims["auth_time"] = Value::Null;
            let t = token(ACCESS_SECRET, claims, Some(NOW), Some(NOW + 5));
            assert_eq!(outcome(&decide(&cfg, &req("GET", "/x", Some(&format!("accessTokenEtls={t}"))), NOW)), (Outcome::SessionValid, 0));
            continue;
        }
        let t = token(ACCESS_SECRET, claims, Some(NOW), Some(NOW + 5));
        assert_eq!(outcome(&decide(&cfg, &req("GET", "/x", Some(&format!("accessTokenEtls={t}"))), NOW)), (Outcome::DeniedNoRefresh, 401), "{bad}");
    }
    let future = access_token(Some(NOW + 6), Some(NOW), NOW + 5);
    assert_eq!(outcome(&decide(&cfg, &req("GET", "/x", Some(&format!("accessTokenEtls={future}"))), NOW)), (Outcome::DeniedNoRefresh, 401));
}
