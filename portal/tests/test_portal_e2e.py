"""The portal and the proxy end to end in a real browser (chromium driven by Playwright), against the
whole site served over HTTP and a real upstream on loopback:

- CORS as the browser itself enforces it, from pages served on two loopback origins (one allowed);
- rotating a key's secret and revoking the key through the portal, as the proxy then answers;
- the usage page counting what the proxy saw, the refused origin named among the rejections.

With PORTAL_SCREENSHOTS set to a directory, the tests also save the README's screenshots there.
The database is read and written only outside the `browser_page()` blocks (see portal/tests/browser.py).
"""

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model

from keys import crypto, services
from keys.models import ApiKey, Role, UsageRecord
from keys.usage import roll_up
from portal.tests.browser import browser_page, needs_chromium, screenshot, sign_in
from proxy.policy import policies
from proxy.tests.upstream_server import UpstreamServer
from proxy.usage import usage

pytestmark = needs_chromium

EMAIL, PASSWORD = "ada@acme.example", "a-long-portal-password-42"
REVOKE_PROPAGATION_SECONDS = 1.5  # policy caches of other processes follow within a second

# The app page each origin serves. Its own JavaScript calls the proxy URL given in the query string
# (`times` times; with `preflight`, a JSON POST with a custom header, which the browser preflights) and
# writes every outcome into #outcome: the answer when fetch() resolves, the error when it rejects.
APP_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>An app on another origin</title></head>
<body>
<h1>An app calling the proxy</h1>
<pre id="outcome">pending</pre>
<script>
async function call(url, init) {
  try {
    const answer = await fetch(url, init);
    return {resolved: true, status: answer.status, body: await answer.json()};
  } catch (error) {
    return {resolved: false, error: error.name, message: error.message};
  }
}
(async function () {
  const params = new URLSearchParams(location.search);
  const init = params.has("preflight")
    ? {method: "POST", headers: {"Content-Type": "application/json", "X-App-Trace": "e2e"},
       body: JSON.stringify({hello: "proxy"})}
    : {};
  const outcomes = [];
  for (let n = 0; n < Number(params.get("times") || 1); n++) {
    outcomes.push(await call(params.get("url"), init));
  }
  const element = document.getElementById("outcome");
  element.textContent = JSON.stringify(outcomes);
  element.dataset.state = "done";
})();
</script>
</body></html>
"""


class _AppPageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path.split("?")[0] != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(APP_PAGE)))
        self.end_headers()
        self.wfile.write(APP_PAGE)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class AppOrigin:
    """A page server on its own loopback port: a distinct origin, http://127.0.0.1:<port>."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _AppPageHandler)
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    def page_url(self, proxy_url: str, *, times: int = 1, preflight: bool = False) -> str:
        params = {"url": proxy_url, "times": times, **({"preflight": "1"} if preflight else {})}
        return f"{self.origin}/?{urlencode(params)}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def app_origins():
    """Two app origins on loopback: the keys allow the first, never the second."""
    allowed, other = AppOrigin(), AppOrigin()
    yield allowed, other
    allowed.stop()
    other.stop()


@pytest.fixture(scope="module")
def running_upstream():
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def upstream_server(running_upstream):
    running_upstream.requests.clear()
    return running_upstream


@pytest.fixture(autouse=True)
def fresh_proxy_state():
    """No policy cached by an earlier test (the slug `echo` is reused) and no usage left uncounted."""
    policies.clear()
    usage.discard_pending()
    yield
    policies.clear()


@pytest.fixture
def echo(transactional_db, upstream_server):
    """A global upstream (staff-made, on loopback) answering with what it received: /echo of the server."""
    return services.upstream_create(
        tenant=None,
        slug="echo",
        name="Echo API",
        base_url=f"{upstream_server.url}/echo",
        allow_private_network=True,
        timeout_seconds=5,
        actor="test",
        actor_is_staff=True,
    )


@pytest.fixture
def acme(transactional_db):
    tenant, _ = services.tenant_create(
        slug="acme-robotics", name="Acme Robotics", owner_email="owner@acme.example", actor="test"
    )
    return tenant


@pytest.fixture
def developer(acme):
    """A developer of Acme Robotics who signs in with EMAIL and PASSWORD."""
    user = get_user_model().objects.create_user(username=EMAIL, email=EMAIL, password=PASSWORD)
    services.membership_set(tenant=acme, user=user, role=Role.DEVELOPER, actor="test")
    services.email_confirm(user=user, method="link")  # as if they had opened the mailed link
    return user


def proxy_url(site, key_id: str, path: str = "hello") -> str:
    return f"{site.url}/proxy/echo/{key_id}/{path}"


def call_proxy(url: str, *, secret: str | None = None) -> tuple[int, dict]:
    """GET the proxy as a server would (no Origin): (status, JSON body)."""
    request = urllib.request.Request(url)
    if secret is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f":{secret}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - our own http:// URL
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def error_code(answer: tuple[int, dict]) -> tuple[int, str]:
    status, body = answer
    return status, body.get("error", {}).get("code", "")


def run_app_page(page, app: AppOrigin, url: str, *, times: int = 1, preflight: bool = False) -> list[dict]:
    """Open the app page on `app`'s origin, let its script call `url`, return what fetch() gave it."""
    page.goto(app.page_url(url, times=times, preflight=preflight))
    outcome = page.locator("#outcome[data-state=done]")
    outcome.wait_for()
    return json.loads(outcome.inner_text())


def roll_up_usage() -> None:
    """Move everything the proxy counted so far into UsageRecord (a roll-up takes complete minutes)."""
    usage.flush()
    roll_up.usage_roll_up(now=time.time() + 61)


def usage_counts(api_key: ApiKey) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for record in UsageRecord.objects.filter(api_key=api_key):
        counts[(record.outcome, record.code)] += record.count
    return counts


def assert_blocked_by_the_browser(outcomes: list[dict]) -> None:
    # A CORS failure is a network error to the page: fetch() rejects with a TypeError, no status.
    for outcome in outcomes:
        assert outcome["resolved"] is False, f"the browser let the page read the answer: {outcome}"
        assert outcome["error"] == "TypeError"


# --- CORS, as the browser enforces it ----------------------------------------------------------------


def test_browser_reads_the_proxy_only_from_the_keys_allowed_origin(
    site, echo, upstream_server, developer, app_origins, acme
):
    allowed, other = app_origins
    # Two more keys, so that the list (a README screenshot) shows a few, one of them revoked.
    services.api_key_create(tenant=acme, name="mobile app", upstreams=[echo], actor="test")
    old, _ = services.api_key_create(tenant=acme, name="old backend", upstreams=[echo], actor="test")
    services.api_key_revoke(api_key=old, actor="test")

    with browser_page() as page:
        sign_in(page, site.url, email=EMAIL, password=PASSWORD)
        page.get_by_role("link", name="New key").click()
        page.get_by_label("Name").fill("web app")
        page.get_by_label("Upstreams").select_option("echo")
        page.get_by_label("Allowed origins").fill(allowed.origin)
        page.get_by_role("button", name="Create key").click()
        page.locator("#secret").wait_for()
        screenshot(page, "key-secret-once")
        key_id = page.locator("code", has_text="pk_").first.inner_text().strip()
        url = proxy_url(site, key_id)

        page.get_by_role("link", name="go to the key").click()
        page.wait_for_url(f"{site.url}/portal/keys/{key_id}")
        screenshot(page, "key-detail")
        page.goto(f"{site.url}/portal/keys")
        screenshot(page, "keys-list")
        screenshot(page, "keys-list-mobile", mobile=True)

        from_allowed = run_app_page(page, allowed, url)
        from_other = run_app_page(page, other, url)
        preflighted_from_allowed = run_app_page(page, allowed, url, preflight=True)
        preflighted_from_other = run_app_page(page, other, url, preflight=True)

    [answer] = from_allowed
    assert answer["resolved"] is True, answer
    assert answer["status"] == 200
    assert (answer["body"]["method"], answer["body"]["path"]) == ("GET", "/echo/hello")

    assert_blocked_by_the_browser(from_other)

    [answer] = preflighted_from_allowed
    assert answer["resolved"] is True, answer
    assert answer["status"] == 200
    assert answer["body"]["method"] == "POST"
    assert json.loads(answer["body"]["body"]) == {"hello": "proxy"}
    assert answer["body"]["headers"]["x-app-trace"] == "e2e"
    assert answer["body"]["headers"]["content-type"] == "application/json"

    assert_blocked_by_the_browser(preflighted_from_other)

    # The proxy answered the preflights itself, and the other origin's POST was never sent.
    received = Counter(request.method for request in upstream_server.requests)
    assert received == {"GET": 1, "POST": 1}

    key = ApiKey.objects.get(key_id=key_id)
    assert (key.name, key.tenant_id, key.allowed_origins) == ("web app", acme.pk, [allowed.origin])
    roll_up_usage()
    # The other origin's simple GET reached the proxy, which refused it, and so did the preflight of its
    # POST (the browser never sent the POST itself): two rejections, both naming that origin.
    assert usage_counts(key) == {("allowed", ""): 2, ("rejected", "origin_not_allowed"): 2}


# --- Rotate and revoke --------------------------------------------------------------------------------


def test_rotate_without_grace_then_revoke_in_the_browser(site, echo, developer, acme):
    key, old_secret = services.api_key_create(tenant=acme, name="backend", upstreams=[echo], actor="test")
    url = proxy_url(site, key.key_id)
    assert call_proxy(url, secret=old_secret)[0] == 200

    with browser_page() as page:
        sign_in(page, site.url, email=EMAIL, password=PASSWORD)
        page.goto(f"{site.url}/portal/keys/{key.key_id}")
        page.get_by_role("link", name="Rotate the secret").click()
        page.get_by_label("None: the old secret stops working at once").check()
        page.get_by_role("button", name="Rotate the secret").click()
        new_secret = page.locator("#secret").inner_text().strip()
        rotated_page = page.locator("main").inner_text()

        # The proxy, called as a server calls it (stdlib HTTP, no ORM in this block).
        after_rotation = {
            "old": call_proxy(url, secret=old_secret),
            "new": call_proxy(url, secret=new_secret),
        }

        page.get_by_role("link", name="go to the key").click()
        page.wait_for_url(f"{site.url}/portal/keys/{key.key_id}")
        assert new_secret not in page.content()
        page.get_by_role("link", name="Revoke this key").click()
        page.wait_for_url(f"{site.url}/portal/keys/{key.key_id}/revoke")
        page.get_by_role("button", name="Revoke the key").click()
        page.wait_for_url(f"{site.url}/portal/keys/{key.key_id}")

        deadline = time.monotonic() + REVOKE_PROPAGATION_SECONDS
        while (after_revocation := call_proxy(url, secret=new_secret))[0] == 200:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        page.reload()
        state = page.locator("dd[class^=state-]").inner_text().strip()
        manage_links = page.get_by_role("link", name="Rotate the secret").count()

    assert crypto.well_formed(new_secret, crypto.SECRET_PREFIX) and new_secret != old_secret
    assert "The old secret no longer works." in rotated_page
    assert error_code(after_rotation["old"]) == (401, "invalid_secret")
    status, body = after_rotation["new"]
    assert (status, body["method"], body["path"]) == (200, "GET", "/echo/hello")

    assert error_code(after_revocation) == (401, "key_revoked")
    assert error_code(call_proxy(url)) == (401, "key_revoked")
    assert (state, manage_links) == ("revoked", 0)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert key.secret_hash == crypto.hash_secret(new_secret)


# --- Usage -------------------------------------------------------------------------------------------


def usage_totals(page) -> dict[str, int]:
    chart = page.locator("figure#usage-chart")
    return {
        name: int(chart.get_attribute(f"data-{name}")) for name in ("allowed", "rejected", "upstream-error")
    }


def rejection_rows(page) -> list[list[str]]:
    rows = page.locator("table#rejections tbody tr")
    return [
        [cell.strip() for cell in rows.nth(n).locator("th, td").all_inner_texts()]
        for n in range(rows.count())
    ]


def test_usage_page_counts_what_the_proxy_saw(site, echo, developer, app_origins, acme):
    allowed, other = app_origins
    key, _ = services.api_key_create(
        tenant=acme, name="web app", upstreams=[echo], allowed_origins=[allowed.origin], actor="test"
    )
    url = proxy_url(site, key.key_id)
    roll_up_usage()  # nothing of this test's making is left to roll up later

    with browser_page() as page:
        sign_in(page, site.url, email=EMAIL, password=PASSWORD)
        page.goto(f"{site.url}/portal/usage")
        before = usage_totals(page)
        from_allowed = run_app_page(page, allowed, url, times=3)
        from_other = run_app_page(page, other, url, times=2)
        session = page.context.storage_state()

    assert [answer["status"] for answer in from_allowed] == [200, 200, 200]
    assert_blocked_by_the_browser(from_other)
    roll_up_usage()

    with browser_page(storage_state=session) as page:
        page.goto(f"{site.url}/portal/usage")
        after = usage_totals(page)
        rejections = rejection_rows(page)
        screenshot(page, "usage")

    assert after["allowed"] - before["allowed"] == 3
    assert after["rejected"] - before["rejected"] == 2
    assert after["upstream-error"] == before["upstream-error"]
    refused = [row for row in rejections if "origin_not_allowed" in row[1]]
    assert len(refused) == 1, rejections
    key_cell, _, detail, requests = refused[0][:4]
    assert key.name in key_cell or key.key_id in key_cell
    assert detail == other.origin
    assert requests == "2"
