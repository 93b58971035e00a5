"""Every portal page in a real browser (Debian's chromium): no WCAG 2 A/AA violation that axe-core finds,
and at a phone's width (390 px) nothing wider than the screen but what scrolls inside its own box."""

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings

from keys import services
from keys.alert_models import WebhookEndpoint
from keys.models import Role
from keys.services import alerts, webhooks
from portal.tests.browser import browser_page, needs_chromium, session_state

AXE = Path(__file__).parent / "js" / "node_modules" / "axe-core" / "axe.min.js"

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(not AXE.is_file(), reason="portal/tests/js/node_modules: make test installs axe-core"),
]

ANONYMOUS_PAGES = ["/portal/login", "/portal/signup", "/portal/password-reset"]
MEMBER_PAGES = [
    "/portal/keys",
    "/portal/keys/new",
    "/portal/keys/{key_id}",
    "/portal/keys/{key_id}/edit",
    "/portal/keys/{key_id}/rotate",
    "/portal/keys/{key_id}/revoke",
    "/portal/usage",
    "/portal/usage?range=30d&key={key_id}",
    "/portal/upstreams",
    "/portal/upstreams/new",
    "/portal/members",
    "/portal/tokens",
    "/portal/audit",
    "/portal/alerts",
    "/portal/alerts/new",
    "/portal/webhooks",
    "/portal/webhooks/new",
    "/portal/webhooks/{endpoint_id}",
]
# Which rules broke, where and why, in a form a failing test can print.
AXE_RUN = """async () => {
  const result = await axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa"]}});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                      nodes: v.nodes.slice(0, 3).map(n => n.html)}));
}"""
# Elements sticking out past the right edge of a phone's screen, unless inside a box that scrolls.
OVERFLOW = """() => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });  // what a reader may open, too
  const width = document.documentElement.clientWidth;
  const scrolls = el => { for (; el; el = el.parentElement) {
    if (["auto", "scroll"].includes(getComputedStyle(el).overflowX)) return true; } return false; };
  return [...document.body.querySelectorAll("*")]
    .filter(el => el.getBoundingClientRect().right > width + 1 && !scrolls(el.parentElement))
    .slice(0, 5).map(el => el.outerHTML.slice(0, 120));
}"""


@pytest.fixture
def owner_session(site, tenant, loopback_upstream, django_user_model):
    """An owner's session cookie on the live site, a key to show, and one audit event at least."""
    owner = django_user_model.objects.create_user(username="o@acme.example", email="o@acme.example")
    services.membership_set(tenant=tenant, user=owner, role=Role.OWNER, actor="test")
    api_key, _ = services.api_key_create(
        tenant=tenant, name="web", upstreams=[loopback_upstream], allowed_origins=["https://a.example"]
    )
    # An alert rule, and an endpoint with a delivery and its answer, for the alerts and webhooks pages.
    alerts.alert_rule_create(tenant=tenant, event="quota.threshold", levels=[80], recipients=[owner])
    with override_settings(KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK=True):
        endpoint, _ = webhooks.webhook_endpoint_create(tenant=tenant, url="http://127.0.0.1:9/hook")
        webhooks.webhook_endpoint_test(endpoint=endpoint)
        webhooks.webhook_deliveries_retry()  # nothing listens on port 9: a failed attempt to show
    client = Client()
    client.force_login(owner)
    return client.cookies[settings.SESSION_COOKIE_NAME].value, api_key.key_id


def member_paths(key_id: str) -> list[str]:
    endpoint_id = WebhookEndpoint.objects.get().pk
    return [path.format(key_id=key_id, endpoint_id=endpoint_id) for path in MEMBER_PAGES]


def _audit(site, paths: list[str], session_key: str | None, width: int) -> dict[str, dict]:
    problems = {}
    state = session_state(site.url, session_key) if session_key else None
    with browser_page(storage_state=state, viewport={"width": width, "height": 800}) as page:
        for path in paths:
            answer = page.goto(site.url + path)
            assert answer.status == 200, (path, answer.status)
            page.add_script_tag(path=str(AXE))
            found = {"axe": page.evaluate(AXE_RUN), "overflow": page.evaluate(OVERFLOW)}
            if found["axe"] or found["overflow"]:
                problems[path] = found
    return problems


@pytest.mark.parametrize("width", [1280, 390])
def test_member_pages_pass_axe_and_fit_a_phone(site, owner_session, width):
    cookie, key_id = owner_session
    paths = member_paths(key_id)

    problems = _audit(site, paths, cookie, width)

    assert problems == {}, json.dumps(problems, indent=1)


@pytest.mark.parametrize("width", [1280, 390])
def test_pages_before_login_pass_axe_and_fit_a_phone(site, width):
    problems = _audit(site, ANONYMOUS_PAGES, None, width)

    assert problems == {}, json.dumps(problems, indent=1)


def test_forms_showing_errors_pass_axe(site, owner_session):
    cookie, _ = owner_session
    problems = {}
    with browser_page(storage_state=session_state(site.url, cookie)) as page:
        page.goto(f"{site.url}/portal/keys/new")
        page.get_by_label("Name").fill("bad origins")
        page.get_by_label("Allowed origins").fill("not an origin")
        page.get_by_role("button", name="Create key").click()
        page.get_by_text("not an origin").first.wait_for()
        errors_shown = page.locator("[role=alert] .errorlist").count()
        page.add_script_tag(path=str(AXE))
        problems["key create"] = page.evaluate(AXE_RUN)
        # The error is read with its field: the textarea names the error's element.
        described_by = page.get_by_label("Allowed origins").get_attribute("aria-describedby")

    assert errors_shown >= 1
    assert "id_allowed_origins_error" in described_by.split()
    assert problems == {"key create": []}, json.dumps(problems, indent=1)


# The controls a person can see and use on the page (links, buttons, fields), by what they say.
VISIBLE_CONTROLS = """() => [
  ...document.querySelectorAll("a[href], button, input:not([type=hidden]), select, textarea")]
  .filter(el => el.checkVisibility())
  .map(el => el.tagName + ":" + (el.getAttribute("aria-label") || el.textContent.trim() || el.name || ""))
  .sort()"""


def test_a_phone_offers_every_control_the_desktop_does(site, owner_session, tenant):
    # Members to act on, so the members page has its change-role and remove controls.
    for n in range(2):
        services.member_add(
            tenant=tenant, email=f"m{n}@acme.example", role=Role.VIEWER, actor_role=Role.OWNER
        )
    session_key, key_id = owner_session
    missing = {}
    paths = member_paths(key_id)  # (before the browser: its event loop forbids the ORM)
    with browser_page(storage_state=session_state(site.url, session_key)) as page:
        for path in paths:
            page.set_viewport_size({"width": 1280, "height": 800})
            page.goto(site.url + path)
            desktop = page.evaluate(VISIBLE_CONTROLS)
            page.set_viewport_size({"width": 390, "height": 800})
            phone = page.evaluate(VISIBLE_CONTROLS)
            if lost := sorted(set(desktop) - set(phone)):
                missing[path] = lost

    assert missing == {}, json.dumps(missing, indent=1)
