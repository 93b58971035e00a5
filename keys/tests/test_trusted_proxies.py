"""PROXY_TRUSTED_PROXIES: parsed once, a bad entry refused at start by a system check and never a 500."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import RequestFactory, override_settings

from keys.client_address import client_address

BAD_ENTRIES = ["10.0.0.0/33", "foo", "10.0.0.1/8", "", "203.0.113.0/24/1"]


def _address(peer: str, forwarded: str = "") -> str:
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    return client_address(request)


@pytest.mark.parametrize("entry", BAD_ENTRIES)
def test_system_check_names_the_bad_trusted_proxy_entry(entry):
    with override_settings(PROXY_TRUSTED_PROXIES=["10.0.0.0/8", entry]):
        with pytest.raises(SystemCheckError) as failure:
            call_command("check")
    assert f"PROXY_TRUSTED_PROXIES entry {entry!r} is not an IP address or CIDR network" in str(failure.value)
    assert "keys.E002" in str(failure.value)


@override_settings(PROXY_TRUSTED_PROXIES=["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"])
def test_system_check_passes_a_valid_list():
    call_command("check")  # raises SystemCheckError on any error


@pytest.mark.parametrize("entry", BAD_ENTRIES)
def test_a_bad_entry_trusts_nobody_but_the_good_ones_still_count(entry):
    with override_settings(PROXY_TRUSTED_PROXIES=[entry]):
        assert _address("10.1.2.3", "203.0.113.9") == "10.1.2.3"
    with override_settings(PROXY_TRUSTED_PROXIES=[entry, "10.0.0.0/8"]):
        assert _address("10.1.2.3", "203.0.113.9, 10.0.0.5") == "203.0.113.9"


def test_a_valid_list_is_believed_and_a_changed_setting_is_seen_at_once():
    with override_settings(PROXY_TRUSTED_PROXIES=["10.0.0.0/8"]):
        assert _address("10.1.2.3", "198.51.100.1, 203.0.113.9") == "203.0.113.9"
        assert _address("192.0.2.7", "203.0.113.9") == "192.0.2.7"  # not a trusted balancer
    with override_settings(PROXY_TRUSTED_PROXIES=["192.0.2.0/24"]):
        assert _address("10.1.2.3", "203.0.113.9") == "10.1.2.3"
        assert _address("192.0.2.7", "203.0.113.9") == "203.0.113.9"
    with override_settings(PROXY_TRUSTED_PROXIES=[]):
        assert _address("192.0.2.7", "203.0.113.9") == "192.0.2.7"


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "foo"])
def test_requests_under_a_bad_setting_are_not_500(site, entry):
    import urllib3

    http = urllib3.PoolManager(retries=False, timeout=10)
    with override_settings(PROXY_TRUSTED_PROXIES=[entry]):
        answer = http.request("GET", f"{site.url}/proxy/nowhere/x/", headers={"X-Forwarded-For": "1.2.3.9"})
    assert answer.status == 404 and answer.json()["error"]["code"] == "unknown_upstream"
