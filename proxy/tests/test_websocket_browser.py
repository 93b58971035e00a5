"""The WebSocket relay in a real browser (Debian's chromium): a page on the key's allowed origin opens a
socket with an access token in `Sec-WebSocket-Protocol` and gets answers; the same page on another
origin is refused at the handshake and never opens."""

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from keys import services
from keys.models import UsageRecord
from portal.tests.browser import browser_page, needs_chromium
from proxy.tests.test_processes import pytestmark as processes_marks
from proxy.tests.test_processes import serve
from proxy.tests.ws_upstream import BLOCK_NUMBER, WsUpstream

pytestmark = [needs_chromium, *processes_marks]

# What a dapp does: `new WebSocket(url, ["bearer", token])`, one call, and report what happened.
PAGE = """<!doctype html><html><body><script>
window.outcome = new Promise((resolve) => {
  const ws = new WebSocket(WS_URL, ["bearer", TOKEN]);
  ws.onopen = () => ws.send(JSON.stringify({jsonrpc: "2.0", id: 1, method: "eth_blockNumber", params: []}));
  ws.onmessage = (event) => {
    resolve({opened: true, protocol: ws.protocol, answer: JSON.parse(event.data)});
    ws.close();
  };
  ws.onclose = (event) => resolve({opened: false, code: event.code});
});
</script></body></html>"""


class _Pages(ThreadingHTTPServer):
    html = b""

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Page(BaseHTTPRequestHandler):
    server: _Pages

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.server.html)))
        self.end_headers()
        self.wfile.write(self.server.html)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _page_server():
    """The page on a real loopback server (so the browser's local-network checks allow a loopback
    socket), reachable as two origins: http://localhost:<port> and http://127.0.0.1:<port>."""
    server = _Pages(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _outcome(page_url: str) -> dict:
    with browser_page() as page:
        page.goto(page_url)
        return page.evaluate("window.outcome")


def test_a_page_on_the_allowed_origin_gets_answers_and_another_origin_is_refused(transactional_db, tenant):
    with WsUpstream() as node, _page_server() as pages:
        upstream = services.upstream_create(
            tenant=None,
            slug="wsnode",
            base_url=node.url,
            allow_private_network=True,
            actor="test",
            actor_is_staff=True,
        )
        allowed_origin, other_origin = f"http://localhost:{pages.port}", f"http://127.0.0.1:{pages.port}"
        key, _ = services.api_key_create(
            tenant=tenant,
            name="dapp",
            upstreams=[upstream],
            actor="test",
            secret_required=True,
            allowed_origins=[allowed_origin],
        )
        token = services.access_token_issue(api_key=key, ttl=300)[1]
        with serve() as served:
            url = f"{served.replace('http://', 'ws://')}/proxy/wsnode/{key.key_id}"
            pages.html = PAGE.replace("WS_URL", json.dumps(url)).replace("TOKEN", json.dumps(token)).encode()
            allowed = _outcome(f"{allowed_origin}/app")
            other = _outcome(f"{other_origin}/app")
        assert allowed == {
            "opened": True,
            "protocol": "bearer",
            "answer": {"jsonrpc": "2.0", "id": 1, "result": BLOCK_NUMBER},
        }
        assert other == {"opened": False, "code": 1006}  # a handshake refused before any 101
        assert len(node.seen.handshakes) == 1
    refusals = UsageRecord.objects.filter(api_key=key, outcome="rejected").values_list("code", "detail")
    assert list(refusals) == [("origin_not_allowed", other_origin)]
