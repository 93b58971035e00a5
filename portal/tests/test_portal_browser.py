"""The portal in a real browser (Debian's chromium driven by Playwright) against the whole site served
over HTTP: sign up, create a key, see its secret once, never again."""

import re

from keys import crypto
from keys.models import ApiKey
from portal.tests.browser import browser_page, needs_chromium
from portal.tests.portal_helpers import found

pytestmark = needs_chromium


def test_sign_up_create_key_secret_shown_once(site):
    # The database is read only outside the browser block: Playwright's sync API runs the block's code
    # in a greenlet, where the ORM would open a connection of its own that nothing closes.
    with browser_page() as page:
        page.goto(f"{site.url}/portal/signup")
        page.get_by_label("E-mail").fill("grace@hopper.example")
        page.get_by_label("Password", exact=True).fill("correct-horse-battery-staple-42")
        page.get_by_label("Password again").fill("correct-horse-battery-staple-42")
        page.get_by_label("Organisation name").fill("Hopper Labs")
        page.get_by_role("button", name="Sign up").click()
        page.wait_for_url(f"{site.url}/portal/keys")

        page.get_by_role("link", name="New key").click()
        page.get_by_label("Name").fill("browser app")
        page.get_by_label("Allowed origins").fill("https://app.example.com")
        page.get_by_role("button", name="Create key").click()

        secret = page.locator("#secret").inner_text().strip()
        assert re.fullmatch(r"sk_[0-9A-Za-z]+", secret)
        assert page.get_by_role("button", name="Copy the secret").is_visible()
        key_id = found(r"pk_[0-9A-Za-z]+", page.content())

        page.get_by_role("link", name="go to the key").click()
        page.wait_for_url(f"{site.url}/portal/keys/{key_id}")
        page.reload()
        detail = page.content()
        page.goto(f"{site.url}/portal/keys")
        listing = page.content()

    for content in (detail, listing):
        assert key_id in content
        assert secret not in content and "sk_" not in content
    key = ApiKey.objects.select_related("tenant").get(key_id=key_id)
    assert (key.name, key.tenant.slug) == ("browser app", "hopper-labs")
    assert key.secret_hash == crypto.hash_secret(secret)
