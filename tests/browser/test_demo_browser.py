"""The demo in a real browser: headless Debian Chromium, driven by WebDriver (selenium).

scripts/demo.sh starts, as a subprocess, the demo login API, the demo app and Envoy with the
real filter and the shipped envoy.yaml (access_ttl_s shortened to 4 s, cookie_secure true, ports
moved to free ones, and, as the demo always runs, login_refresh_path /refresh and login_logout_path
/logout).
The browser signs in through the login form, lands on the protected page and sees its name,
cannot read the HttpOnly session cookies from JavaScript, stays signed in across an access
token expiry (the filter rotates both ETLS cookies), and logs out.

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian packages chromium, chromium-driver;
scripts/setup.sh installs them). A missing tool fails the test; nothing is skipped.
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "out" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")

# Short, to keep the wait short; long enough that the access cookie (Max-Age = access_ttl_s)
# is still there when the test reads it right after signing in on a busy 2-core machine.
ACCESS_TTL_S = 4
CLOCK_SKEW_S = 5  # the filter's default clock_skew_s (envoy.yaml does not change it)
ETLS_COOKIES = ("accessTokenEtls", "refreshTokenEtls")
API_COOKIES = ("accessToken", "refreshToken")
ALL_COOKIES = ETLS_COOKIES + API_COOKIES

# DEMO-ONLY users of demo/login_api.py.
ALICE = ("alice@example.com", "alice-demo-password")
BOB = ("bob@example.com", "bob-demo-password")

DEMO_START_TIMEOUT_S = 600  # includes scripts/setup.sh and a possible wasm rebuild
WAIT_S = 15


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def nothing_listens_on(port):
    """True when a connection to 127.0.0.1:port is refused (no listener left behind)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def children_of(pid):
    """PIDs whose parent is pid (read from /proc; no process is looked up by name)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def default_sigint():
    """Runs in the child before exec: SIGINT back to its default. A process started with SIGINT
    ignored (pytest under nohup, or as a background job of a non-interactive shell) passes that on,
    and bash cannot trap a signal that was ignored when it started: demo.sh would never see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    def __init__(self, name="demo-run"):
        self.listen, self.admin, self.app, self.login_api, self.login_admin = free_ports(5)
        self.base = f"http://localhost:{self.listen}"
        self.run_dir = OUT / name
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        self.stdout_path = OUT / f"{name}.demo.sh.out"
        self.proc = None

    def start(self, extra_env=None):
        """Starts scripts/demo.sh in its own session (process group), as a terminal would run it."""
        env = dict(os.environ)
        env.update({
            "ETLS_DEMO_ACCESS_TTL_S": str(ACCESS_TTL_S),
            # The production default, whatever envoy.yaml says: Chromium must keep Secure cookies
            # on http://localhost (a secure context).
            "ETLS_DEMO_COOKIE_SECURE": "true",
            "ETLS_DEMO_LISTEN_PORT": str(self.listen),
            "ETLS_DEMO_ADMIN_PORT": str(self.admin),
            "ETLS_DEMO_APP_PORT": str(self.app),
            "ETLS_DEMO_LOGIN_API_PORT": str(self.login_api),
            "ETLS_DEMO_LOGIN_ADMIN_PORT": str(self.login_admin),
            "ETLS_DEMO_RUN_DIR": str(self.run_dir),
        })
        env.update(extra_env or {})
        out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([str(REPO / "scripts" / "demo.sh")], cwd=REPO, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=default_sigint)
        out.close()
        deadline = time.monotonic() + DEMO_START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            if "etls-auth demo is running" in text:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"scripts/demo.sh exited with {self.proc.returncode}:\n{self.diagnostics()}")
            time.sleep(0.2)
        raise AssertionError(f"scripts/demo.sh not ready after {DEMO_START_TIMEOUT_S} s:\n{self.diagnostics()}")

    def diagnostics(self):
        parts = [f"--- {self.stdout_path}\n" + self.stdout_path.read_text(errors="replace")[-4000:]]
        for name in ("envoy", "app", "login_api"):
            log = self.run_dir / f"{name}.log"
            if log.exists():
                parts.append(f"--- {log}\n" + log.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self, timeout=20, ctrl_c=False):
        """SIGTERM to demo.sh (by its PID), or with ctrl_c what Ctrl-C in a terminal does (SIGINT
        to its process group), and wait; returns its exit status or None if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        if ctrl_c:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_leftovers(self, pids):
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def demo():
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(tool) and os.access(tool, os.X_OK)):
            raise AssertionError(f"{tool} not found: run scripts/setup.sh (Debian packages chromium, chromium-driver)")
    d = Demo()
    child_pids = []
    try:
        d.start()
        child_pids = children_of(d.proc.pid)
        d.child_pids = child_pids
        yield d
    finally:
        # The last test stops demo.sh itself and checks it cleaned up; this is only the safety net.
        d.stop()
        d.kill_leftovers(child_pids)
        print(d.diagnostics())


def new_chromium():
    """A headless Chromium driven by WebDriver, with its own profile (its own cookie jar)."""
    OUT.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,850", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(OUT / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT_S)
    return driver


@pytest.fixture(scope="module")
def browser():
    driver = new_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, predicate, what):
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                             ).until(lambda d: predicate(d))
    except Exception as exc:  # TimeoutException: say what we were waiting for and where we are
        raise AssertionError(f"timed out waiting for {what}; at {driver.current_url}: "
                             f"{driver.find_element(By.TAG_NAME, 'body').text[:500]!r}") from exc


def on_page(path, element_id):
    """Predicate: the browser shows `path` and its document has the element `element_id`."""
    return lambda d: urlsplit(d.current_url).path == path and bool(d.find_elements(By.ID, element_id))


def path_of(driver):
    url = urlsplit(driver.current_url)
    return url.path + (f"?{url.query}" if url.query else "")


def cookies_by_name(driver):
    return {c["name"]: c for c in driver.get_cookies()}


def submit_login(driver, email, password):
    driver.find_element(By.ID, "email").clear()
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").clear()
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "submit").click()


def text_of(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def test_sign_in_rotate_and_log_out_in_chromium(demo, browser):
    b = browser
    # A protected page load without a session is sent to the login page, with where it wanted to go.
    b.get(demo.base + "/admin?tab=1")
    assert urlsplit(b.current_url).path == "/login"
    assert parse_qs(urlsplit(b.current_url).query) == {"next": ["/admin?tab=1"]}
    assert b.find_element(By.TAG_NAME, "h1").text == "Sign in"

    # Wrong password: the form says so and no cookie is set.
    submit_login(b, ALICE[0], "not-the-password")
    wait_for(b, lambda d: "Invalid credentials" in text_of(d, "status"), "the invalid-credentials message")
    assert text_of(b, "status") == "Invalid credentials (HTTP 401)"
    assert b.get_cookies() == []

    # Right password: back to where we wanted to go, signed in as Alice.
    submit_login(b, *ALICE)
    wait_for(b, on_page("/admin", "user-name"), "the admin page after login")
    assert path_of(b) == "/admin?tab=1"
    # Read the jar at once: the access cookie lives only ACCESS_TTL_S.
    jar = cookies_by_name(b)
    now = time.time()
    assert text_of(b, "user-name") == "Alice Admin"
    assert text_of(b, "user-id") == "1"
    assert text_of(b, "user-role") == "admin"

    # The four cookies are there, HttpOnly, Secure, SameSite=Strict, host-only, Path=/ ...
    assert sorted(jar) == sorted(ALL_COOKIES)
    for name, c in jar.items():
        assert (c["httpOnly"], c["secure"], c["sameSite"], c["path"], c["domain"]) == \
            (True, True, "Strict", "/", "localhost"), c
    # ... with lifetimes from Max-Age: access_ttl_s for the ETLS access cookie, 7 days for the rest.
    assert 0 < jar["accessTokenEtls"]["expiry"] - now <= ACCESS_TTL_S + 1
    for name in ("refreshTokenEtls",) + API_COOKIES:
        assert 604800 - 30 <= jar[name]["expiry"] - now <= 604800 + 1, name

    b.get(demo.base + "/")
    assert path_of(b) == "/"
    assert b.find_element(By.TAG_NAME, "h1").text == "Protected page"
    assert text_of(b, "user-name") == "Alice Admin"
    b.save_screenshot(str(OUT / "signed-in.png"))
    assert (OUT / "signed-in.png").stat().st_size > 0
    # ... and page scripts cannot read any of them.
    assert b.execute_script("return document.cookie") == ""
    assert text_of(b, "js-cookies") == "(empty)"

    # Leave the live page (its polls of /session.json would rotate the session themselves): the
    # rotation below is the one a page load gets. /whoami renews the access cookie if it is gone.
    b.get(demo.base + "/whoami")
    jar = cookies_by_name(b)
    assert sorted(jar) == sorted(ALL_COOKIES)
    old = {name: jar[name]["value"] for name in ALL_COOKIES}
    old_access = jwt_claims(old["accessTokenEtls"])
    assert old_access["exp"] - old_access["iat"] == ACCESS_TTL_S
    assert old_access["userId"] == 1 and old_access["role"] == "admin"

    # Past exp + clock_skew_s the access token is expired (the browser dropped its cookie after
    # Max-Age already); a reload must still be signed in, through a rotation.
    wait_until = old_access["exp"] + CLOCK_SKEW_S + 1
    while time.time() < wait_until:  # bounded: at most ACCESS_TTL_S + CLOCK_SKEW_S + 1 s
        time.sleep(0.2)
    assert "accessTokenEtls" not in cookies_by_name(b)
    b.get(demo.base + "/")
    assert path_of(b) == "/"
    assert b.find_element(By.TAG_NAME, "h1").text == "Protected page"
    assert text_of(b, "user-name") == "Alice Admin"
    assert text_of(b, "user-role") == "admin"
    jar = cookies_by_name(b)
    assert sorted(jar) == sorted(ALL_COOKIES)
    for name, c in jar.items():
        assert (c["httpOnly"], c["secure"], c["sameSite"], c["path"]) == (True, True, "Strict", "/"), c
    assert jar["accessTokenEtls"]["value"] != old["accessTokenEtls"]
    assert jar["refreshTokenEtls"]["value"] != old["refreshTokenEtls"]
    # The demo runs with login_refresh_path: the rotation asked the login API, which renewed its own
    # tokens too.
    assert jar["accessToken"]["value"] != old["accessToken"]
    assert jar["refreshToken"]["value"] != old["refreshToken"]
    assert jar["refreshToken"]["value"].startswith("demo-api-refresh-")
    new_access = jwt_claims(jar["accessTokenEtls"]["value"])
    assert new_access["userId"] == 1 and new_access["role"] == "admin"
    assert new_access["exp"] > old_access["exp"]
    assert jwt_claims(jar["refreshTokenEtls"]["value"])["jti"] != jwt_claims(old["refreshTokenEtls"])["jti"]

    # Log out: back on the login page, every cookie gone, protected pages redirect again.
    b.find_element(By.ID, "logout").click()
    wait_for(b, on_page("/login", "login-form"), "the login page after logout")
    assert b.get_cookies() == []
    b.get(demo.base + "/")
    assert urlsplit(b.current_url).path == "/login"
    assert parse_qs(urlsplit(b.current_url).query) == {"next": ["/"]}


def stat_value(driver, name):
    """A counter of the page's panel as a number, or None while it shows no number."""
    text = text_of(driver, f"stat-{name}")
    return int(text) if text.isdigit() else None


def test_signed_in_page_counts_down_shows_rotations_and_counters(demo, browser):
    b = browser
    b.delete_all_cookies()
    b.get(demo.base + "/login?next=%2F")
    submit_login(b, *ALICE)
    wait_for(b, on_page("/", "token-countdown"), "the signed-in page")
    first_iat = text_of(b, "token-iat")

    # The countdown runs in the page: "expires in N s", N at most the access TTL, going down.
    def seconds_left(d):
        text = text_of(d, "token-countdown")
        return int(text.split()[2]) if text.startswith("expires in ") else None
    first = wait_for(b, seconds_left, "the countdown")
    assert 1 <= first <= ACCESS_TTL_S
    wait_for(b, lambda d: (seconds_left(d) or first) < first, "the countdown to go down")

    # The filter's counters, from Envoy's admin stats: at least this login and the page's polls.
    wait_for(b, lambda d: (stat_value(d, "logins") or 0) >= 1 and (stat_value(d, "verified") or 0) >= 1,
             "the counters panel")
    rotations_before = stat_value(b, "rotations")
    assert rotations_before is not None and stat_value(b, "denials") is not None
    b.save_screenshot(str(OUT / "countdown.png"))

    # The browser drops the access cookie after Max-Age (the TTL); the next poll is rotated by the
    # filter and the page lists it, with the new token's times.
    rotation = wait_for(b, lambda d: d.find_elements(By.CSS_SELECTOR, "#rotations li"), "a rotation on the page")
    assert "new access token" in rotation[0].text
    assert text_of(b, "token-iat") != first_iat
    assert not b.find_element(By.ID, "rotations-empty").is_displayed()
    wait_for(b, lambda d: (seconds_left(d) or 0) >= 1, "the countdown of the new token")
    wait_for(b, lambda d: (stat_value(d, "rotations") or 0) > rotations_before, "the rotation counter to move")
    size = b.get_window_size()
    b.set_window_size(1100, 1400)  # the whole page in the picture
    try:
        b.save_screenshot(str(OUT / "rotation.png"))
    finally:
        b.set_window_size(size["width"], size["height"])
    assert (OUT / "rotation.png").stat().st_size > 0
    # Still the same user, and the session cookies are still HttpOnly.
    assert text_of(b, "user-name") == "Alice Admin" and text_of(b, "user-role") == "admin"
    assert b.execute_script("return document.cookie") == ""
    jar = cookies_by_name(b)
    assert sorted(jar) == sorted(ALL_COOKIES)
    assert jwt_claims(jar["accessTokenEtls"]["value"])["role"] == "admin"


def test_string_id_user_and_unsafe_next_in_chromium(demo, browser):
    b = browser
    b.delete_all_cookies()
    # An absolute or protocol-relative next is ignored: the form goes to "/" on this site.
    for evil in ("https://evil.example/", "//evil.example/x"):
        b.get(demo.base + "/login?next=" + evil.replace("/", "%2F").replace(":", "%3A"))
        submit_login(b, *BOB)
        wait_for(b, on_page("/", "user-name"), "the home page after login")
        assert urlsplit(b.current_url).netloc == urlsplit(demo.base).netloc
        assert text_of(b, "user-name") == "Bob User"
        assert text_of(b, "user-id") == "u-bob-42"
        assert text_of(b, "user-role") == "user"
        assert jwt_claims(cookies_by_name(b)["refreshTokenEtls"]["value"])["userId"] == "u-bob-42"
        b.delete_all_cookies()
    # The app decides on the role header: Bob is no admin.
    b.get(demo.base + "/login?next=%2Fadmin")
    submit_login(b, *BOB)
    wait_for(b, lambda d: urlsplit(d.current_url).path == "/admin"
             and d.find_element(By.TAG_NAME, "h1").text == "Forbidden", "the forbidden page")
    # The page says why: the session is fine, the role is not.
    message = text_of(b, "message")
    assert "Bob User is signed in, but has role user" in message, message
    assert "/admin needs role admin" in message, message
    b.save_screenshot(str(OUT / "forbidden.png"))


def test_the_page_shows_when_the_session_ends_for_good(demo, browser):
    """Every token carries auth_time (the login), and the signed-in page shows the absolute end of
    the session: auth_time + max_session_s (the filter's default, 30 days)."""
    b = browser
    b.delete_all_cookies()
    b.get(demo.base + "/login?next=%2Fwhoami")
    submit_login(b, *ALICE)
    wait_for(b, lambda d: urlsplit(d.current_url).path == "/whoami", "/whoami after login")
    jar = cookies_by_name(b)
    access = jwt_claims(jar["accessTokenEtls"]["value"])
    assert isinstance(access["auth_time"], int) and abs(access["auth_time"] - time.time()) < 60, access
    assert jwt_claims(jar["refreshTokenEtls"]["value"])["auth_time"] == access["auth_time"]
    b.get(demo.base + "/")
    wait_for(b, on_page("/", "session-end"), "the signed-in page")
    end = access["auth_time"] + 2592000
    assert text_of(b, "session-end") == time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end)) + f" ({end})"
    assert text_of(b, "auth-time").endswith(f"({access['auth_time']})")
    b.save_screenshot(str(OUT / "session-end.png"))
    b.get(demo.base + "/whoami")  # off the live page


def test_a_copy_of_the_cookies_is_refused_after_a_logout_in_chromium(demo, browser):
    """The demo runs with login_logout_path: logging out in one browser ends the session at the
    demo login API, so a second browser holding a copy of the old cookies (another device, a
    stolen cookie) is refused at its next rotation."""
    b = browser
    b.delete_all_cookies()
    b.get(demo.base + "/login?next=%2Fwhoami")
    submit_login(b, *BOB)
    wait_for(b, lambda d: urlsplit(d.current_url).path == "/whoami", "/whoami after login")

    # A second browser gets a copy of the four cookies, and is signed in with them. (The first
    # browser makes no request that could rotate before it logs out: a rotation's answer is reused
    # for the same refreshToken for 30 s, which a copy holding that token would get; see
    # docs/sessions.md, Logout.)
    jar = cookies_by_name(b)
    copy = new_chromium()
    try:
        copy.get(demo.base + "/login")
        for c in jar.values():
            copy.add_cookie({k: c[k] for k in ("name", "value", "path", "secure", "httpOnly", "sameSite", "expiry") if k in c})
        # The access cookie lives ACCESS_TTL_S: it may be gone already; the refresh cookies carry the session.
        assert {"refreshTokenEtls", "refreshToken"} <= set(cookies_by_name(copy)) <= set(ALL_COOKIES)
        copy.get(demo.base + "/whoami")
        assert json.loads(copy.find_element(By.TAG_NAME, "body").text)["name"] == "Bob User"

        # Log out in the first browser (what the page's button does): its cookies are gone, and
        # the login API heard of it.
        status = b.execute_script(
            "return fetch('/api/auth/logout', {method: 'POST', credentials: 'same-origin'}).then(r => r.status)")
        assert status == 200
        assert b.get_cookies() == []
        log = demo.run_dir / "login_api.log"
        wait_for(b, lambda d: '"POST /logout HTTP/1.1" 200' in log.read_text(errors="replace"), "the login API's /logout")

        # The copy keeps a valid access token until it expires; its next rotation asks the login
        # API, which ended the session: the copy is sent to the login page, every cookie cleared.
        copy_access = jwt_claims(cookies_by_name(copy)["accessTokenEtls"]["value"]) \
            if "accessTokenEtls" in cookies_by_name(copy) else {"exp": time.time()}
        wait_until = copy_access["exp"] + CLOCK_SKEW_S + 1
        while time.time() < wait_until:  # bounded: at most ACCESS_TTL_S + CLOCK_SKEW_S + 1 s
            time.sleep(0.2)
        copy.get(demo.base + "/")
        wait_for(copy, on_page("/login", "login-form"), "the copy sent to the login page")
        assert parse_qs(urlsplit(copy.current_url).query) == {"next": ["/"]}
        assert copy.get_cookies() == []
        assert '"POST /refresh HTTP/1.1" 401' in log.read_text(errors="replace")
        b.save_screenshot(str(OUT / "logged-out.png"))
    finally:
        copy.quit()


def test_demo_sh_stops_every_process_on_sigterm(demo):
    pids = list(demo.child_pids)
    assert len(pids) == 3, f"expected demo.sh to run 3 processes, found {pids}"
    assert all(pid_alive(p) for p in pids)
    status = demo.stop()
    assert status is not None, "scripts/demo.sh did not exit within 20 s of SIGTERM"
    assert status == 143
    assert [p for p in pids if pid_alive(p)] == []
    for port in (demo.listen, demo.admin, demo.app, demo.login_api):
        assert nothing_listens_on(port), port
    assert "demo: stopped" in demo.stdout_path.read_text()


def test_demo_sh_stops_every_process_on_ctrl_c():
    # A second demo, set up already by the first: what Ctrl-C in a terminal does to it.
    d = Demo("demo-ctrl-c")
    pids = []
    try:
        d.start({"ETLS_DEMO_SKIP_SETUP": "1"})
        pids = children_of(d.proc.pid)
        assert len(pids) == 3, f"expected demo.sh to run 3 processes, found {pids}"
        status = d.stop(ctrl_c=True)
        assert status is not None, "scripts/demo.sh did not exit within 20 s of Ctrl-C"
        assert status == 130
        assert [p for p in pids if pid_alive(p)] == []
        for port in (d.listen, d.admin, d.app, d.login_api):
            assert nothing_listens_on(port), port
        assert "demo: stopped" in d.stdout_path.read_text()
    finally:
        d.stop()
        d.kill_leftovers(pids)


def test_disabled_user_is_signed_out_in_chromium(browser):
    """With login_refresh_path (ETLS_DEMO_LOGIN_REFRESH_PATH=/refresh), a user disabled at the
    demo login API (its admin listener) is signed out at the next rotation: after the access TTL
    a reload lands on the login page, every cookie cleared. Its own demo run, so the other tests
    keep the default configuration."""
    import urllib.request

    d = Demo("demo-revocation")
    child_pids = []
    try:
        d.start(extra_env={"ETLS_DEMO_LOGIN_REFRESH_PATH": "/refresh"})
        child_pids = children_of(d.proc.pid)
        b = browser
        b.delete_all_cookies()
        b.get(d.base + "/login?next=%2F")
        submit_login(b, *BOB)
        wait_for(b, on_page("/", "user-name"), "the home page after login")
        jar = cookies_by_name(b)
        assert text_of(b, "user-name") == "Bob User"
        assert sorted(jar) == sorted(ALL_COOKIES)
        access = jwt_claims(jar["accessTokenEtls"]["value"])

        disable = urllib.request.Request(f"http://127.0.0.1:{d.login_admin}/users/bob@example.com/disable", method="POST")
        with urllib.request.urlopen(disable, timeout=5) as r:
            assert json.loads(r.read()) == {"email": "bob@example.com", "disabled": True}

        wait_until = access["exp"] + CLOCK_SKEW_S + 1
        while time.time() < wait_until:  # bounded: at most ACCESS_TTL_S + CLOCK_SKEW_S + 1 s
            time.sleep(0.2)
        b.refresh()
        wait_for(b, on_page("/login", "login-form"), "the login page after the user was disabled")
        assert parse_qs(urlsplit(b.current_url).query) == {"next": ["/"]}
        assert b.get_cookies() == []
        log = (d.run_dir / "login_api.log").read_text(errors="replace")
        assert '"POST /refresh HTTP/1.1" 401' in log, log[-2000:]
    finally:
        d.stop()
        d.kill_leftovers(child_pids)
