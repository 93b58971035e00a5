"""Report-only checks (DESIGN.md "Report-only mode"): which refusals a key enforces and which it only
reports. Pure functions of (key policy, rejections); no I/O, so the WSGI relay and an async one share them.

A refusal names the key's check that made it (`Rejection.check`, one of keys.validators.REPORT_ONLY_CHECKS)
only for checks 6-8 of the contract, the ones a tenant may set to report. Every other refusal (key state,
secret, tokens, a token's own origins, path, body, upstream) has no `check` and is always enforced.

The contract for a relay, in DESIGN's check order:
1. steps 1-5 as before: their refusals answer at once (`enforced` would return them anyway).
2. `reported: list[Rejection] = []`; then for steps 6, 7, the JSON-RPC methods and 8 (the limiter's
   `Verdict.refusals`) call `rejection = enforced(key, reported, *their rejections)`: the first refusal
   of a check in enforce mode is the answer; those of report-mode checks are appended to `reported`
   and the request goes on to the next step. The limiter still spends what it spends.
3. `headers.update(would_reject_headers(reported))` before answering, refusal or relay.
4. when the request is sent upstream, `count_would_reject(usage.count, key.key_id, reported)`: one
   WOULD_REJECT count per would-be refusal, with its code and detail. The request itself is counted
   as usual (ALLOWED or UPSTREAM_ERROR); a request refused later by an enforced rule counts only that.
"""

from collections.abc import Callable

from keys.access import Refusal as Rejection
from keys.usage.store import WOULD_REJECT
from proxy.policy import KeyPolicy

HEADER = "X-Would-Reject"


def reported_only(key: KeyPolicy, rejection: Rejection) -> bool:
    """True when the key has the check that made this refusal in report mode."""
    return bool(rejection.check) and rejection.check in key.report_only


def enforced(key: KeyPolicy, reported: list[Rejection], *rejections: Rejection | None) -> Rejection | None:
    """The first of `rejections` (None: that check passed) that the key enforces; the report-mode ones
    before it are appended to `reported`. Later ones are not looked at: the answer is a refusal."""
    for rejection in rejections:
        if rejection is None:
            continue
        if not reported_only(key, rejection):
            return rejection
        reported.append(rejection)
    return None


def would_reject_headers(reported: list[Rejection]) -> dict[str, str]:
    """`X-Would-Reject: origin_not_allowed, rate_limited` (each code once, in check order), or nothing."""
    if not reported:
        return {}
    return {HEADER: ", ".join(dict.fromkeys(rejection.code for rejection in reported))}


def count_would_reject(
    count: Callable[[str, str, str, str], None], key_id: str, reported: list[Rejection]
) -> None:
    """One would-be refusal counted per report-mode check that would have refused (usage.count's shape)."""
    for rejection in reported:
        count(key_id, WOULD_REJECT, rejection.code, rejection.detail)
