#!/usr/bin/env python3
"""Demo app behind the etls-auth filter (Python 3 standard library only).

It has no session code of its own: Envoy with the etls-auth filter sits in front of it, answers
/api/auth/login and /api/auth/logout, and forwards a protected request only with a verified
session, after setting the x-etls-user-id and x-etls-role headers from the token claims.

GET /login   public login page (a form that POSTs JSON to /api/auth/login with fetch)
GET /        protected page: who you are, from the headers the filter set; a logout button
GET /admin   protected page that the app itself restricts to role "admin"
GET /whoami  protected JSON: the identity headers the app received
GET /healthz readiness probe for scripts/demo.sh (only useful on the app's own port)
"""

import argparse
import base64
import html
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from login_api import find_user_by_id  # noqa: E402  (demo users live in one place)

USER_ID_HEADER = "x-etls-user-id"
ROLE_HEADER = "x-etls-role"
ACCESS_COOKIE = "accessTokenEtls"

STYLE = """
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; line-height: 1.5; }
  label { display: block; margin-top: .8rem; }
  input { font: inherit; padding: .3rem; width: 100%; box-sizing: border-box; }
  button { font: inherit; margin-top: 1rem; padding: .4rem 1.2rem; }
  code { background: #f2f2f2; padding: 0 .2rem; }
  table { border-collapse: collapse; } td, th { text-align: left; padding: .2rem .8rem .2rem 0; vertical-align: top; }
  #status { color: #a00; min-height: 1.5em; }
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
<h1>{heading}</h1>
<p id="greeting">Signed in as <strong id="user-name">{name}</strong>.</p>
<table>
  <tr><th>User id (<code>x-etls-user-id</code>)</th><td><code id="user-id">{user_id}</code></td></tr>
  <tr><th>Role (<code>x-etls-role</code>)</th><td><code id="user-role">{role}</code></td></tr>
  <tr><th>Access token issued</th><td id="token-iat">{iat}</td></tr>
  <tr><th>Access token expires</th><td id="token-exp">{exp}</td></tr>
  <tr><th>Page served</th><td id="served-at">{now}</td></tr>
  <tr><th><code>document.cookie</code></th><td><code id="js-cookies"></code></td></tr>
</table>
<p>The app never saw a password or a session store: the filter verified the
<code>accessTokenEtls</code> cookie (or rotated it with <code>refreshTokenEtls</code>) and set the
two headers above. The session cookies are HttpOnly, so page scripts cannot read them.</p>
<p><a href="/">Home</a> | <a href="/admin">Admin page</a> | <a href="/whoami">/whoami (JSON)</a></p>
<button id="logout" type="button">Log out</button>
<script>
document.getElementById("js-cookies").textContent = document.cookie === "" ? "(empty)" : document.cookie;
document.getElementById("logout").addEventListener("click", async () => {{
  try {{
    await fetch("/api/auth/logout", {{ method: "POST", credentials: "same-origin" }});
  }} finally {{
    window.location.assign("/login");
  }}
}});
</script>
</body>
</html>
"""

MESSAGE_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title><link rel="icon" href="data:,"><style>{style}</style></head>
<body><h1>{title}</h1><p>{message}</p><p><a href="/">Home</a></p></body>
</html>
"""


def token_times(cookie_header):
    """Reads iat/exp of the access token the filter forwarded, for display only.

    The filter has already verified the token; the app only decodes the payload. It never
    prints the token itself.
    """
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name != ACCESS_COOKIE or value.count(".") != 2:
            continue
        payload = value.split(".")[1]
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None, None
        if isinstance(claims, dict):
            return claims.get("iat"), claims.get("exp")
    return None, None


def fmt_time(ts):
    if not isinstance(ts, (int, float)):
        return "-"
    return time.strftime("%H:%M:%S UTC", time.gmtime(ts)) + f" ({int(ts)})"


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
        if path not in ("/", "/admin", "/whoami"):
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
        if path == "/admin" and role != "admin":
            self._message(403, "Forbidden",
                          f"{html.escape(name)} has role <code>{html.escape(role)}</code>; "
                          "this page needs <code>admin</code>. The app decided this from the "
                          "<code>x-etls-role</code> header.")
            return
        iat, exp = token_times(self.headers.get("Cookie"))
        self._send(200, "text/html; charset=utf-8", HOME_PAGE.format(
            style=STYLE,
            title="Admin" if path == "/admin" else "Home",
            heading="Admin page" if path == "/admin" else "Protected page",
            name=html.escape(name),
            user_id=html.escape(user_id),
            role=html.escape(role),
            iat=fmt_time(iat),
            exp=fmt_time(exp),
            now=fmt_time(time.time()),
        ))

    def log_message(self, fmt, *args):
        sys.stderr.write("app: %s\n" % (fmt % args))


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of connections from Envoy would see
    # dropped SYNs (and Envoy a connect timeout). Any real server has a longer queue.
    request_queue_size = 128


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
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
