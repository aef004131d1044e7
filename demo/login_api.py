#!/usr/bin/env python3
"""Demo external login API for the etls-auth demo (Python 3 standard library only).

POST /login with JSON {"email": ..., "password": ...}
  - known user, right password: 200 {"accessToken", "refreshToken", "userData": {id, name, email, role}}
  - a disabled user:            403 {"error": "User disabled"}
  - anything else:              401 {"error": "Invalid credentials"}
  - body not JSON / fields not strings: 400
POST /refresh with JSON {"refreshToken": ...} (the filter's `login_refresh_path`)
  - a refresh token it issued, user enabled: 200 {"accessToken", "refreshToken", "userData"}, new tokens;
    the old refresh token is then spent, but for 30 s it still gets the same answer (a burst of
    requests spread over several Envoy workers makes several calls with it)
  - user disabled, a session that logged out, or a token it does not know (spent, or from before
    a restart): 401
POST /logout with JSON {"refreshToken": ...} (the filter's `login_logout_path`)
  - ends the session that refresh token belongs to, everywhere: every refresh token of it (the
    current one and those already spent) gets 401 at /refresh from then on, so a copy of the
    browser's old cookies is refused at its next rotation. 200 {"message": "Logged out"}, also
    for a token it does not know (nothing to end).
GET /healthz: 200 "ok" (readiness probe for scripts/demo.sh)

With --admin-port, a second listener (127.0.0.1 only) disables and enables users while the demo
runs, so you can watch a revocation take effect:
  POST /users/<email>/disable, POST /users/<email>/enable, GET /users

The accessToken / refreshToken it returns are opaque random strings standing in for a real
login API's own tokens; the filter passes them on verbatim as the accessToken / refreshToken cookies.
They are short-lived (--token-ttl-s, default 60: the access token's lifetime; the API keeps them in
memory only).

DEMO-ONLY: the users and passwords below are public and hard-coded. Never use this server,
or these credentials, for anything real.
"""

import argparse
import hmac
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# DEMO-ONLY credentials. Alice has a numeric id, Bob a string id: the filter keeps the JSON
# type of userData.id in its tokens, and the demo shows both.
DEMO_USERS = {
    "alice@example.com": {
        "password": "alice-demo-password",
        "userData": {"id": 1, "name": "Alice Admin", "email": "alice@example.com", "role": "admin"},
    },
    "bob@example.com": {
        "password": "bob-demo-password",
        "userData": {"id": "u-bob-42", "name": "Bob User", "email": "bob@example.com", "role": "user"},
    },
}

MAX_BODY = 64 * 1024
# How long a spent refresh token still gets the answer it got (a burst over several workers).
REUSE_S = 30


class Sessions:
    """The API's own tokens, in memory: refresh token -> (email, session), access token -> (email,
    expiry), the sessions that logged out, and the users an admin disabled. A session is one login
    and every token its refreshes issued."""

    def __init__(self, token_ttl_s):
        self.token_ttl_s = token_ttl_s
        self.lock = threading.Lock()
        self.refresh = {}   # refresh token -> (email, session id)
        self.spent = {}     # spent refresh token -> (email, session id, answer, time it was spent)
        self.access = {}    # access token -> (email, expiry)
        self.ended = set()  # session ids that logged out
        self.disabled = set()

    def issue(self, email, session):
        """New tokens for `email` in `session` (called with the lock held)."""
        access = "demo-api-access-" + secrets.token_urlsafe(24)
        refresh = "demo-api-refresh-" + secrets.token_urlsafe(24)
        self.access[access] = (email, time.time() + self.token_ttl_s)
        self.refresh[refresh] = (email, session)
        return {"accessToken": access, "refreshToken": refresh, "userData": DEMO_USERS[email]["userData"]}

    def login(self, email):
        with self.lock:
            return None if email in self.disabled else self.issue(email, secrets.token_hex(8))

    def logout(self, refresh_token):
        """Ends the session of `refresh_token` (current or spent); True if it knew the token."""
        with self.lock:
            if refresh_token in self.refresh:
                _, session = self.refresh[refresh_token]
            elif refresh_token in self.spent:
                _, session, _, _ = self.spent[refresh_token]
            else:
                return False
            self.ended.add(session)
            for token, (_, s) in list(self.refresh.items()):
                if s == session:
                    del self.refresh[token]
            return True

    def renew(self, refresh_token):
        """The answer to POST /refresh: (status, payload)."""
        now = time.time()
        with self.lock:
            for token, (_, _, _, at) in list(self.spent.items()):
                if now - at > REUSE_S:
                    del self.spent[token]
            for token, (_, expiry) in list(self.access.items()):
                if expiry < now:
                    del self.access[token]
            email, session = self.refresh.pop(refresh_token, (None, None))
            if email is None and refresh_token in self.spent:
                email, session, answer, _ = self.spent[refresh_token]
                if session in self.ended:
                    return 401, {"error": "Session ended"}
                if email in self.disabled:
                    return 401, {"error": "User disabled"}
                return 200, answer
            if email is None:
                return 401, {"error": "Invalid refresh token"}
            if email in self.disabled:
                return 401, {"error": "User disabled"}
            answer = self.issue(email, session)
            self.spent[refresh_token] = (email, session, answer, now)
            return 200, answer

    def set_disabled(self, email, disabled):
        with self.lock:
            if email not in DEMO_USERS:
                return False
            if disabled:
                self.disabled.add(email)
            else:
                self.disabled.discard(email)
            return True

    def users(self):
        with self.lock:
            return [{"email": e, "disabled": e in self.disabled} for e in DEMO_USERS]


SESSIONS = Sessions(60)


def find_user_by_id(user_id):
    """Returns the demo userData whose id, as text, equals user_id (a header value), or None."""
    for user in DEMO_USERS.values():
        if str(user["userData"]["id"]) == user_id:
            return user["userData"]
    return None


class LoginApiHandler(BaseHTTPRequestHandler):
    server_version = "etls-demo-login-api"
    sys_version = ""

    def _reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._reply(404, {"error": "Not found"})

    def _json_body(self):
        """The request's JSON body, or None after answering 400."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._reply(400, {"error": "Bad request"})
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError:
            self._reply(400, {"error": "Body must be JSON"})
            return None

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        if path not in ("/login", "/refresh", "/logout"):
            self._reply(404, {"error": "Not found"})
            return
        data = self._json_body()
        if data is None:
            return
        if path in ("/refresh", "/logout"):
            token = data.get("refreshToken") if isinstance(data, dict) else None
            if not isinstance(token, str):
                self._reply(400, {"error": "refreshToken must be a string"})
                return
            if path == "/refresh":
                self._reply(*SESSIONS.renew(token))
            else:
                SESSIONS.logout(token)
                self._reply(200, {"message": "Logged out"})
            return
        email = data.get("email") if isinstance(data, dict) else None
        password = data.get("password") if isinstance(data, dict) else None
        if not isinstance(email, str) or not isinstance(password, str):
            self._reply(400, {"error": "email and password must be strings"})
            return
        user = DEMO_USERS.get(email.strip().lower())
        # Compare in constant time even in a demo: it is the habit worth copying.
        if user is None or not hmac.compare_digest(user["password"].encode(), password.encode()):
            self._reply(401, {"error": "Invalid credentials"})
            return
        answer = SESSIONS.login(email.strip().lower())
        if answer is None:
            self._reply(403, {"error": "User disabled"})
            return
        self._reply(200, answer)

    def log_message(self, fmt, *args):
        # The request line only (never the body: it carries the password).
        sys.stderr.write("login_api: %s\n" % (fmt % args))


class AdminHandler(BaseHTTPRequestHandler):
    """The admin listener: disable or enable a demo user while the demo runs."""
    server_version = "etls-demo-login-api-admin"
    sys_version = ""
    _reply = LoginApiHandler._reply

    def do_GET(self):
        if self.path == "/users":
            self._reply(200, {"users": SESSIONS.users()})
        else:
            self._reply(404, {"error": "Not found"})

    def do_POST(self):
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) == 3 and parts[0] == "users" and parts[2] in ("disable", "enable"):
            email = parts[1].lower()
            if SESSIONS.set_disabled(email, parts[2] == "disable"):
                self._reply(200, {"email": email, "disabled": parts[2] == "disable"})
                return
        self._reply(404, {"error": "Not found"})

    def log_message(self, fmt, *args):
        sys.stderr.write("login_api admin: %s\n" % (fmt % args))


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of connections from Envoy would see
    # dropped SYNs (and Envoy a connect timeout). Any real server has a longer queue.
    request_queue_size = 128


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--admin-port", type=int, default=None,
                        help="also listen on 127.0.0.1:ADMIN_PORT for POST /users/<email>/disable|enable")
    parser.add_argument("--token-ttl-s", type=int, default=60, help="lifetime of the access tokens it issues")
    args = parser.parse_args()
    SESSIONS.token_ttl_s = args.token_ttl_s
    server = DemoServer((args.host, args.port), LoginApiHandler)
    admin = None
    if args.admin_port is not None:
        admin = DemoServer(("127.0.0.1", args.admin_port), AdminHandler)
        threading.Thread(target=admin.serve_forever, daemon=True).start()
        print(f"demo login API admin on http://127.0.0.1:{args.admin_port}/users", flush=True)
    print(f"demo login API (DEMO-ONLY users) on http://{args.host}:{args.port}/login", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if admin is not None:
            admin.shutdown()
            admin.server_close()


if __name__ == "__main__":
    main()
