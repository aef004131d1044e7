//! Fuzz `core::on_reply` with arbitrary answers of the login API and of the refresh cluster
//! (statuses, header bytes, bodies, reported sizes, no answer at all). A panic is a finding; so is
//! any decision the judge refuses: cookies on a failed login, a status outside the documented mapping,
//! a rotation on tokens that do not verify.
#![no_main]

#[path = "../common/judge.rs"]
mod judge;

use std::cell::RefCell;

use arbitrary::Arbitrary;
use etls_auth::core::{self, decision::{CallKind, UpstreamReply}, request::RequestView};
use etls_auth::error::CallError;
use judge::{Setup, NOW};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Login { access: String, refresh: String, id: Option<i64>, sid: String, role: Option<String>, tail: String },
}

#[derive(Arbitrary, Debug)]
struct Input {
    setup: u8,
    refresh: bool,
    failed: Option<bool>,
    status: u16,
    headers: Vec<(u8, Vec<u8>)>,
    good_cookies: bool,
    body: Body,
    extra_size: u32,
    html: bool,
}

const HEADERS: &[&str] = &["set-cookie", "Set-Cookie", "retry-after", "content-type", "x"];

thread_local! {
    static SETUPS: RefCell<Option<Vec<Setup>>> = const { RefCell::new(None) };
}

fuzz_target!(|input: Input| {
    SETUPS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let setups = slot.get_or_insert_with(|| judge::setups().unwrap());
        let setup = &setups[usize::from(input.setup) % setups.len()];
        let mut headers: Vec<(String, Vec<u8>)> = input
            .headers
            .into_iter()
            .take(8)
            .map(|(n, v)| (HEADERS[usize::from(n) % HEADERS.len()].to_owned(), v))
            .collect();
        if input.good_cookies {
            let names = &setup.cfg.cookies.names;
            headers.push(("set-cookie".into(), format!("{}={}; Path=/", names.access, judge::good_access(600)).into_bytes()));
            headers.push(("set-cookie".into(), format!("{}={}", names.refresh, judge::good_refresh(600)).into_bytes()));
        }
        let body = match input.body {
            Body::Raw(b) => b,
            Body::Login { access, refresh, id, sid, role, tail } => {
                let id = id.map_or(serde_json::Value::from(sid), serde_json::Value::from);
                let mut s = serde_json::json!({"accessToken": access, "refreshToken": refresh, "userData": {"id": id, "role": role}}).to_string();
                s.push_str(&tail);
                s.into_bytes()
            }
        };
        let answer = match input.failed {
            Some(true) => Err(CallError::NoResponse),
            Some(false) => Err(CallError::Dispatch("BadArgument".into())),
            None => Ok(UpstreamReply { status: u32::from(input.status), headers, body_size: body.len().saturating_add(input.extra_size as usize), body }),
        };
        let req = RequestView {
            method: "GET".into(),
            path: "/x?y=1".into(),
            accept: Some(if input.html { "text/html" } else { "application/json" }.into()),
            end_of_stream: true,
            ..RequestView::default()
        };
        let kind = if input.refresh { CallKind::Refresh } else { CallKind::Login };
        let d = core::on_reply(&setup.cfg, kind, &req, answer.clone(), NOW);
        let verdict = if input.refresh {
            judge::check_refresh_reply(setup, &req, &answer, &d)
        } else {
            judge::check_login_reply(setup, &answer, &d)
        };
        if let Err(e) = verdict {
            panic!("setup {} {kind:?}: {e}\nanswer {answer:?}\ndecision {d:?}", setup.name);
        }
    });
});
