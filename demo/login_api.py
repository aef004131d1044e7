#!/usr/bin/env python3
"""Demo external login API for the etls-auth demo (Python 3 standard library only).

POST /login with JSON {"email": ..., "password": ...}
  - known user, right password: 200 {"accessToken", "refreshToken", "userData": {id, name, email, role}}
  - anything else:              401 {"error": "Invalid credentials"}
  - body not JSON / fields not strings: 400
GET /healthz: 200 "ok" (readiness probe for scripts/demo.sh)

The accessToken / refreshToken it returns are opaque random strings standing in for a real
login API's own tokens; the filter passes them on verbatim as the accessToken / refreshToken cookies.

DEMO-ONLY: the users and passwords below are public and hard-coded. Never use this server,
or these credentials, for anything real.
"""

import argparse
import hmac
import json
import secrets
import sys
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

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/login":
            self._reply(404, {"error": "Not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._reply(400, {"error": "Bad request"})
            return
        raw = self.rfile.read(length)
        try:
            data = json.loads(raw)
        except ValueError:
            self._reply(400, {"error": "Body must be JSON"})
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
        self._reply(200, {
            "accessToken": "demo-api-access-" + secrets.token_urlsafe(24),
            "refreshToken": "demo-api-refresh-" + secrets.token_urlsafe(24),
            "userData": user["userData"],
        })

    def log_message(self, fmt, *args):
        # The request line only (never the body: it carries the password).
        sys.stderr.write("login_api: %s\n" % (fmt % args))


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of connections from Envoy would see
    # dropped SYNs (and Envoy a connect timeout). Any real server has a longer queue.
    request_queue_size = 128


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    server = DemoServer((args.host, args.port), LoginApiHandler)
    print(f"demo login API (DEMO-ONLY users) on http://{args.host}:{args.port}/login", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
