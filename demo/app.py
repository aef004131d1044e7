#!/usr/bin/env python3
"""Demo app behind the etls-auth filter (Python 3 standard library only).

It has no session code of its own: Envoy with the etls-auth filter sits in front of it, answers
/api/auth/login and /api/auth/logout, and forwards a protected request only with a verified
session, after setting the x-etls-user-id and x-etls-role headers from the token claims.

GET /login   public login page (a form that POSTs JSON to /api/auth/login with fetch)
GET /        protected page: who you are, from the headers the filter set; a logout button
GET /admin   protected page that the app itself restricts to role "admin"
GET /whoami  protected JSON: the identity headers the app received
GET /session.json  protected JSON the signed-in page polls every second: who, the access token's
             times (for the countdown; a new iat is a rotation), when the session ends for good
             (auth_time + --max-session-s) and the filter's counters read from Envoy's admin
             stats (--envoy-admin)
GET /healthz readiness probe for scripts/demo.sh (only useful on the app's own port)
"""

import argparse
import base64
import html
import json
import os
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from login_api import find_user_by_id  # noqa: E402  (demo users live in one place)

USER_ID_HEADER = "x-etls-user-id"
ROLE_HEADER = "x-etls-role"
ACCESS_COOKIE = "accessTokenEtls"
REFRESH_COOKIE = "refreshTokenEtls"
# Envoy's admin address (http://127.0.0.1:9901), set by --envoy-admin; None: no counters panel.
ENVOY_ADMIN = None
# The filter's max_session_s (--max-session-s, what scripts/demo.sh configured): a session ends for
# good at the token's auth_time + this, however active it is (docs/sessions.md).
MAX_SESSION_S = 2592000

STYLE = """
  :root { --ink: #1d2430; --muted: #5f6b7a; --line: #e3e7ed; --accent: #2457c5; --ok: #1b7a43; --bad: #b3261e; }
  * { box-sizing: border-box; }
  body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: #f6f7f9;
         max-width: 46rem; margin: 2.5rem auto; padding: 0 1rem; }
  h1 { font-size: 1.6rem; margin: 0 0 .3rem; } h2 { font-size: 1rem; margin: 0 0 .6rem; color: var(--muted);
       text-transform: uppercase; letter-spacing: .04em; }
  .card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.2rem; margin: 1rem 0; }
  .muted, small { color: var(--muted); }
  label { display: block; margin-top: .8rem; }
  input { font: inherit; padding: .45rem .5rem; width: 100%; border: 1px solid #c9d0da; border-radius: 6px; }
  button { font: inherit; margin-top: 1rem; padding: .45rem 1.2rem; border: 0; border-radius: 6px;
           background: var(--accent); color: #fff; cursor: pointer; }
  button.quiet { background: #e9edf3; color: var(--ink); margin: 0; }
  code { background: #eef1f5; padding: 0 .25rem; border-radius: 4px; font-size: .92em; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: .3rem .8rem .3rem 0; vertical-align: top; border-bottom: 1px solid var(--line); }
  tr:last-child td, tr:last-child th { border-bottom: 0; }
  th { font-weight: 500; color: var(--muted); width: 45%; }
  #status { color: var(--bad); min-height: 1.5em; }
  .top { display: flex; justify-content: space-between; align-items: center; gap: 1rem; }
  .countdown { font-size: 2.2rem; font-variant-numeric: tabular-nums; font-weight: 600; }
  .bar { height: 6px; background: var(--line); border-radius: 3px; overflow: hidden; margin: .3rem 0 .6rem; }
  .bar > div { height: 100%; background: var(--ok); width: 100%; transition: width .25s linear; }
  .expired .countdown { color: var(--bad); } .expired .bar > div { background: var(--bad); }
  .stats { display: grid; grid-template-columns: repeat(4, 1fr); gap: .6rem; }
  .stat { border: 1px solid var(--line); border-radius: 8px; padding: .5rem .7rem; }
  .stat b { display: block; font-size: 1.5rem; font-variant-numeric: tabular-nums; }
  .stat span { color: var(--muted); font-size: .85rem; }
  ol#rotations { margin: 0; padding-left: 1.4rem; } ol#rotations li { font-variant-numeric: tabular-nums; }
  .flash { animation: flash 1.5s ease-out; } @keyframes flash { from { background: #fff3b0; } to { background: transparent; } }
"""

LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sign in - etls-auth demo</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body>
<h1>Sign in</h1>
<p>This page is public. Everything else is behind the etls-auth filter in Envoy.</p>
<form id="login-form">
  <label>Email <input id="email" name="email" type="email" autocomplete="username" required></label>
  <label>Password <input id="password" name="password" type="password" autocomplete="current-password" required></label>
  <button id="submit" type="submit">Sign in</button>
</form>
<p id="status" role="status"></p>
<p><small>DEMO-ONLY users: <code>alice@example.com</code> / <code>alice-demo-password</code> (admin),
<code>bob@example.com</code> / <code>bob-demo-password</code> (user).</small></p>
<script>
// Only ever navigate to a path on this site after signing in: "next" comes from the URL,
// and anyone can craft a link, so "//evil.example" or "https://evil.example" fall back to "/".
function safeNext() {{
  const next = new URLSearchParams(window.location.search).get("next");
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\\\")) return "/";
  try {{
    const url = new URL(next, window.location.origin);
    if (url.origin !== window.location.origin) return "/";
    return url.pathname + url.search + url.hash;
  }} catch (e) {{
    return "/";
  }}
}}

const form = document.getElementById("login-form");
const status = document.getElementById("status");
form.addEventListener("submit", async (event) => {{
  event.preventDefault();
  status.textContent = "Signing in...";
  let res;
  try {{
    res = await fetch("/api/auth/login", {{
      method: "POST",
      credentials: "same-origin",
      headers: {{ "Content-Type": "application/json" }},
      body: JSON.stringify({{ email: form.email.value, password: form.password.value }}),
    }});
  }} catch (e) {{
    status.textContent = "Network error: " + e;
    return;
  }}
  if (res.ok) {{
    window.location.assign(safeNext());
    return;
  }}
  let message = "Sign-in failed (HTTP " + res.status + ")";
  try {{
    const body = await res.json();
    if (body && typeof body.error === "string") message = body.error + " (HTTP " + res.status + ")";
  }} catch (e) {{ /* not JSON */ }}
  if (res.status === 429 && res.headers.get("Retry-After")) {{
    message += ", retry after " + res.headers.get("Retry-After") + " s";
  }}
  status.textContent = message;
}});
</script>
</body>
</html>
"""

HOME_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - etls-auth demo</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body>
<div class="top">
  <div><h1>{heading}</h1>
  <p id="greeting" class="muted">Signed in as <strong id="user-name">{name}</strong>.</p></div>
  <button id="logout" type="button" class="quiet">Log out</button>
</div>

<div class="card" id="token-card">
  <h2>Access token</h2>
  <div class="countdown" id="token-countdown">{remaining}</div>
  <div class="bar"><div id="token-bar"></div></div>
  <p class="muted" id="token-note">Renewed by the filter on the first request after it expires.</p>
</div>

<div class="card">
  <h2>The filter's counters</h2>
  <div class="stats">
    <div class="stat"><b id="stat-logins">-</b><span>logins</span></div>
    <div class="stat"><b id="stat-verified">-</b><span>sessions verified</span></div>
    <div class="stat"><b id="stat-rotations">-</b><span>rotations</span></div>
    <div class="stat"><b id="stat-denials">-</b><span>denials</span></div>
  </div>
  <p class="muted" id="stats-source"><small>From Envoy's admin stats
  (<code>/stats?filter=etls_auth&amp;format=json</code>), for this Envoy, all users. Each poll of this page
  is one more verified session.</small></p>
</div>

<div class="card">
  <h2>Rotations seen by this page</h2>
  <p class="muted" id="rotations-empty">None yet. This page asks the app for <code>/session.json</code>
  every second; once the access token has expired, the filter renews both session cookies on that
  request, and the app sees a token with a new issue time.</p>
  <ol id="rotations"></ol>
</div>

<div class="card">
  <h2>What the app received</h2>
  <table>
    <tr><th>User id (<code>x-etls-user-id</code>)</th><td><code id="user-id">{user_id}</code></td></tr>
    <tr><th>Role (<code>x-etls-role</code>)</th><td><code id="user-role">{role}</code></td></tr>
    <tr><th>Access token issued</th><td id="token-iat">{iat}</td></tr>
    <tr><th>Access token expires</th><td id="token-exp">{exp}</td></tr>
    <tr><th>Session (refresh token) ends</th><td id="refresh-exp">{refresh_exp}</td></tr>
    <tr><th>Signed in (<code>auth_time</code>)</th><td id="auth-time">{auth_time}</td></tr>
    <tr><th>Session ends for good (<code>auth_time</code> + <code>max_session_s</code>)</th><td id="session-end">{session_end}</td></tr>
    <tr><th>Page served</th><td id="served-at">{now}</td></tr>
    <tr><th><code>document.cookie</code></th><td><code id="js-cookies"></code></td></tr>
  </table>
</div>

<p class="muted">The app never saw a password or a session store: the filter verified the
<code>accessTokenEtls</code> cookie (or renewed it with <code>refreshTokenEtls</code>) and set the
two headers above. The session cookies are HttpOnly, so page scripts cannot read them.</p>
<p><a href="/">Home</a> · <a href="/admin">Admin page</a> · <a href="/whoami">/whoami</a> · <a href="/session.json">/session.json</a></p>
<script>
document.getElementById("js-cookies").textContent = document.cookie === "" ? "(empty)" : document.cookie;
document.getElementById("logout").addEventListener("click", async () => {{
  try {{
    await fetch("/api/auth/logout", {{ method: "POST", credentials: "same-origin" }});
  }} finally {{
    window.location.assign("/login");
  }}
}});
{live_script}
</script>
</body>
</html>
"""

# The signed-in page, live: polls /session.json every second, counts the access token down, lists
# each rotation (a token with a new iat) and shows the filter's counters.
LIVE_SCRIPT = """
let token = {{ iat: {iat_json}, exp: {exp_json} }};
let clockOffset = {now_json} - Date.now() / 1000;  // server clock minus this browser's
let rotations = 0;
const $ = (id) => document.getElementById(id);
const hhmmss = (t) => new Date(t * 1000).toISOString().slice(11, 19) + " UTC";

function renderCountdown() {{
  if (typeof token.exp !== "number") return;
  const now = Date.now() / 1000 + clockOffset;
  const left = token.exp - now;
  const card = $("token-card");
  if (left > 0) {{
    $("token-countdown").textContent = "expires in " + Math.ceil(left) + " s";
    card.classList.remove("expired");
  }} else {{
    $("token-countdown").textContent = "expired " + Math.floor(-left) + " s ago";
    card.classList.add("expired");
  }}
  const life = token.exp - token.iat;
  const share = life > 0 ? Math.max(0, Math.min(1, left / life)) : 0;
  $("token-bar").style.width = (share * 100).toFixed(1) + "%";
}}

function showRotation(old, now) {{
  rotations += 1;
  $("rotations-empty").hidden = true;
  const li = document.createElement("li");
  li.className = "flash";
  li.textContent = hhmmss(now) + ": new access token, issued " + hhmmss(token.iat)
    + ", expires " + hhmmss(token.exp) + " (the previous one expired " + hhmmss(old.exp) + ")";
  $("rotations").prepend(li);
}}

function showCounters(counters) {{
  if (!counters) {{
    $("stats-source").textContent = "Envoy's admin stats are not available (start the app with --envoy-admin).";
    return;
  }}
  for (const key of ["logins", "verified", "rotations", "denials"]) $("stat-" + key).textContent = counters[key];
}}

async function poll() {{
  let res;
  try {{
    res = await fetch("/session.json", {{ credentials: "same-origin", cache: "no-store" }});
  }} catch (e) {{
    $("token-note").textContent = "The demo is not answering (" + e + ").";
    return;
  }}
  if (res.status === 401) {{
    $("token-note").innerHTML = 'The session has ended. <a href="/login">Sign in again</a>.';
    return;
  }}
  if (!res.ok) return;
  const s = await res.json();
  clockOffset = s.now - Date.now() / 1000;
  const old = token;
  token = s.access;
  if (typeof old.iat === "number" && token.iat !== old.iat) {{
    $("token-iat").textContent = s.access_text.iat;
    $("token-exp").textContent = s.access_text.exp;
    $("refresh-exp").textContent = s.refresh_text.exp;
    showRotation(old, s.now);
  }}
  showCounters(s.counters);
  renderCountdown();
}}

renderCountdown();
setInterval(renderCountdown, 250);
setInterval(poll, 1000);
poll();
"""

MESSAGE_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title><link rel="icon" href="data:,"><style>{style}</style></head>
<body><h1>{title}</h1><div class="card"><p id="message">{message}</p></div><p><a href="/">Home</a></p></body>
</html>
"""


def token_claims(cookie_header, cookie_name=ACCESS_COOKIE):
    """The payload of the token in cookie `cookie_name` of the Cookie header the filter forwarded,
    for display only: the filter has verified (or just minted) it, the app only decodes it and
    never prints the token itself. {} when there is none."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name != cookie_name or value.count(".") != 2:
            continue
        payload = value.split(".")[1]
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return {}
        return claims if isinstance(claims, dict) else {}
    return {}


def session_end(cookie_header):
    """(auth_time, auth_time + MAX_SESSION_S) from the access token the filter forwarded: when the
    session started and when it ends for good, whatever the user does. (None, None) for a token
    without auth_time."""
    auth_time = token_claims(cookie_header).get("auth_time")
    if not isinstance(auth_time, int):
        return None, None
    return auth_time, auth_time + MAX_SESSION_S


def token_times(cookie_header):
    """(iat, exp) of the access token the filter forwarded."""
    claims = token_claims(cookie_header)
    return claims.get("iat"), claims.get("exp")


# The counters of the page's panel, from Envoy's metric names (wasmcustom.etls_auth.<outcome>).
def summarize_counters(stats):
    """{"logins", "verified", "rotations", "denials", "all"} from Envoy's /stats JSON, or None."""
    values = {}
    for stat in stats.get("stats", []) if isinstance(stats, dict) else []:
        name, value = stat.get("name", ""), stat.get("value")
        if name.startswith("wasmcustom.etls_auth.") and isinstance(value, int):
            values[name.removeprefix("wasmcustom.etls_auth.")] = value
    if not values:
        return None
    total = lambda prefix: sum(v for k, v in values.items() if k.startswith(prefix))  # noqa: E731
    return {
        "logins": values.get("login_succeeded", 0),
        "verified": values.get("session_valid", 0),
        "rotations": total("rotated_"),
        "denials": total("denied_"),
        "all": dict(sorted(values.items())),
    }


def envoy_counters():
    """The filter's counters read from Envoy's admin API (ENVOY_ADMIN), or None."""
    if not ENVOY_ADMIN:
        return None
    try:
        with urllib.request.urlopen(ENVOY_ADMIN + "/stats?filter=etls_auth&format=json", timeout=2) as res:
            return summarize_counters(json.loads(res.read()))
    except (OSError, ValueError, urllib.error.URLError):
        return None


def session_json(user_id, role, name, cookie_header):
    """What /session.json answers: who, the token times (numbers and as text), the counters."""
    access = token_claims(cookie_header)
    refresh = token_claims(cookie_header, REFRESH_COOKIE)
    return {
        "userId": user_id, "role": role, "name": name, "now": time.time(),
        "access": {"iat": access.get("iat"), "exp": access.get("exp")},
        "access_text": {"iat": fmt_time(access.get("iat")), "exp": fmt_time(access.get("exp"))},
        "refresh_text": {"exp": fmt_time(refresh.get("exp"))},
        "session_end": session_end(cookie_header)[1],
        "counters": envoy_counters(),
    }


def remaining_text(exp, now):
    if not isinstance(exp, (int, float)):
        return "-"
    left = exp - now
    return f"expires in {int(-(-left // 1))} s" if left > 0 else f"expired {int(-left)} s ago"


def fmt_time(ts):
    """HH:MM:SS UTC (and the date when it is not today), with the Unix time."""
    if not isinstance(ts, (int, float)):
        return "-"
    same_day = time.gmtime(ts)[:3] == time.gmtime()[:3]
    return time.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) + f" ({int(ts)})"


def forbidden_message(name, role):
    """Why /admin says no: the session is fine, the role is not."""
    shown = f"<code>{html.escape(role)}</code>" if role else "no role"
    return (f"{html.escape(name)} is signed in, but has {'role ' if role else ''}{shown}; "
            "<code>/admin</code> needs role <code>admin</code>. The filter verified the session and "
            "let the request through; the app refused it, based on the <code>x-etls-role</code> "
            "header the filter set from the token.")


class AppHandler(BaseHTTPRequestHandler):
    server_version = "etls-demo-app"
    sys_version = ""

    def _send(self, status, content_type, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        # Pages depend on who is signed in: never cache them.
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _message(self, status, title, message):
        self._send(status, "text/html; charset=utf-8",
                   MESSAGE_PAGE.format(style=STYLE, title=html.escape(title), message=message))

    def _identity(self):
        """(user_id, role) from the headers the filter set, or None outside Envoy."""
        user_id = self.headers.get(USER_ID_HEADER)
        if not user_id:
            return None
        return user_id, self.headers.get(ROLE_HEADER) or ""

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, "text/plain", "ok")
            return
        if path == "/login" or path.startswith("/login/"):
            self._send(200, "text/html; charset=utf-8", LOGIN_PAGE.format(style=STYLE))
            return
        if path not in ("/", "/admin", "/whoami", "/session.json"):
            self._message(404, "Not found", "No page here.")
            return
        identity = self._identity()
        if identity is None:
            # Only reachable when someone bypasses Envoy and talks to the app port directly.
            self._message(401, "Not signed in",
                          "This app trusts the identity headers set by the etls-auth filter. "
                          "Open it through Envoy: <a href=\"http://localhost:10000/\">http://localhost:10000/</a>.")
            return
        user_id, role = identity
        user = find_user_by_id(user_id)
        name = user["name"] if user else f"user {user_id}"
        if path == "/whoami":
            self._send(200, "application/json",
                       json.dumps({"userId": user_id, "role": role, "name": name}))
            return
        if path == "/session.json":
            self._send(200, "application/json", json.dumps(session_json(user_id, role, name, self.headers.get("Cookie"))))
            return
        if path == "/admin" and role != "admin":
            self._message(403, "Forbidden", forbidden_message(name, role))
            return
        cookie_header = self.headers.get("Cookie")
        iat, exp = token_times(cookie_header)
        now = time.time()
        live = LIVE_SCRIPT.format(iat_json=json.dumps(iat), exp_json=json.dumps(exp), now_json=json.dumps(now))
        self._send(200, "text/html; charset=utf-8", HOME_PAGE.format(
            style=STYLE,
            title="Admin" if path == "/admin" else "Home",
            heading="Admin page" if path == "/admin" else "Protected page",
            name=html.escape(name),
            user_id=html.escape(user_id),
            role=html.escape(role),
            iat=fmt_time(iat),
            exp=fmt_time(exp),
            refresh_exp=fmt_time(token_claims(cookie_header, REFRESH_COOKIE).get("exp")),
            auth_time=fmt_time(session_end(cookie_header)[0]),
            session_end=fmt_time(session_end(cookie_header)[1]),
            remaining=remaining_text(exp, now),
            now=fmt_time(now),
            live_script=live,
        ))

    def log_message(self, fmt, *args):
        sys.stderr.write("app: %s\n" % (fmt % args))


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of connections from Envoy would see
    # dropped SYNs (and Envoy a connect timeout). Any real server has a longer queue.
    request_queue_size = 128


def main():
    global ENVOY_ADMIN, MAX_SESSION_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--envoy-admin", metavar="URL",
                        help="Envoy's admin address, e.g. http://127.0.0.1:9901, for the counters panel")
    parser.add_argument("--max-session-s", type=int, default=MAX_SESSION_S,
                        help="the filter's max_session_s, to show when a session ends for good (default 2592000)")
    args = parser.parse_args()
    MAX_SESSION_S = args.max_session_s
    ENVOY_ADMIN = args.envoy_admin.rstrip("/") if args.envoy_admin else None
    server = DemoServer((args.host, args.port), AppHandler)
    print(f"demo app on http://{args.host}:{args.port}/ (open it through Envoy)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
