"""The key page's ready-to-paste snippets, run as a user would paste them: against the live site, through
the real proxy, to a real upstream on loopback. None of them holds the secret; they read KEY_SECRET."""

import html
import json
import re
import shutil
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from keys import services
from keys.models import Role
from proxy.policy import policies
from proxy.tests.upstream_server import UpstreamServer

SNIPPET_RE = re.compile(r'<code id="(snippet-[a-z-]+)">(.*?)</code>', re.S)
# portal/tests/js holds what the JavaScript snippets import (ethers), installed by `make test` with npm.
JS_MODULES = Path(__file__).parent / "js" / "node_modules"
BLOCK_NUMBER = 0x1234AB


@pytest.fixture(scope="module")
def upstream_server():
    with UpstreamServer() as server:
        yield server


def global_upstream(slug: str, base_url: str):
    """A global upstream on a loopback server, as staff make one (allowed a private network)."""
    return services.upstream_create(
        tenant=None,
        slug=slug,
        base_url=base_url,
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
    )


@pytest.fixture
def echo_key(site, tenant, upstream_server):
    """A key on an upstream that answers /echo…, and its secret."""
    upstream = global_upstream("echo", f"{upstream_server.url}/echo")
    policies.clear()
    return services.api_key_create(tenant=tenant, name="snippets", upstreams=[upstream], actor="test")


def snippets_of(portal_client, site, key_id: str) -> dict[str, str]:
    """The snippets on the key page as a viewer sees it, served for the live site's host."""
    client = portal_client(Role.VIEWER)
    host = urlsplit(site.url).netloc
    content = client.get(f"/portal/keys/{key_id}", HTTP_HOST=host).content.decode()
    return {name: html.unescape(code) for name, code in SNIPPET_RE.findall(content)}


def get_json(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback test server
        return answer.status, json.load(answer)


def test_the_page_offers_every_snippet_and_no_secret(site, echo_key, portal_client):
    api_key, secret = echo_key
    snippets = snippets_of(portal_client, site, api_key.key_id)

    assert set(snippets) == {
        "snippet-curl",
        "snippet-fetch",
        "snippet-ethers",
        "snippet-ethers-ws",
        "snippet-websocket",
        "snippet-token-python",
        "snippet-token-node",
    }
    proxy_url = f"{site.url}/proxy/echo/{api_key.key_id}/"
    assert proxy_url in snippets["snippet-curl"]
    assert f'new JsonRpcProvider("{proxy_url}")' in snippets["snippet-ethers"]
    ws_url = f"{site.url.replace('http://', 'ws://')}/proxy/echo/{api_key.key_id}/"
    assert f'new WebSocketProvider("{ws_url}")' in snippets["snippet-ethers-ws"]
    assert f'new WebSocket("{ws_url}", ["bearer", accessToken])' in snippets["snippet-websocket"]
    assert all(secret not in text and "sk_" not in text for text in snippets.values())


def test_the_curl_snippet_reaches_the_upstream_with_the_secret(site, echo_key, portal_client):
    api_key, secret = echo_key
    curl = snippets_of(portal_client, site, api_key.key_id)["snippet-curl"]

    done = subprocess.run(  # noqa: S603 - the snippet is ours, run by bash as a user would
        ["bash", "-c", curl + " -s -w '\\n%{http_code}'"],
        env={"KEY_SECRET": secret, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "200", done.stdout + done.stderr
    assert json.loads(body)["path"] == "/echo"  # the base URL itself


def test_the_curl_snippet_without_the_secret_is_refused(site, echo_key, portal_client):
    api_key, _ = echo_key
    services.api_key_update(api_key=api_key, secret_required=True, actor="test")
    curl = snippets_of(portal_client, site, api_key.key_id)["snippet-curl"]

    done = subprocess.run(  # noqa: S603
        ["bash", "-c", curl + " -s -o /dev/null -w '%{http_code}'"],
        env={"KEY_SECRET": "sk_wrong", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.stdout == "401"


def test_the_python_token_exchange_snippet_gets_a_token_the_proxy_accepts(
    site, echo_key, portal_client, monkeypatch
):
    api_key, secret = echo_key
    services.api_key_update(api_key=api_key, secret_required=True, actor="test")
    snippets = snippets_of(portal_client, site, api_key.key_id)
    monkeypatch.setenv("KEY_SECRET", secret)

    namespace: dict = {}
    exec(snippets["snippet-token-python"], namespace)  # noqa: S102 - the page's snippet, as pasted
    token = namespace["access_token"](ttl=60)

    assert token.startswith("at_")
    bearer = {"Authorization": f"Bearer {token}"}
    status, echoed = get_json(f"{site.url}/proxy/echo/{api_key.key_id}/", bearer)
    assert status == 200 and echoed["method"] == "GET"
    # A key that requires its secret: the browser snippets use the token, never the secret.
    assert "Bearer ${accessToken}" in snippets["snippet-fetch"]
    assert 'setHeader("Authorization", `Bearer ${accessToken}`)' in snippets["snippet-ethers"]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_node_token_exchange_snippet_gets_a_token_the_proxy_accepts(site, echo_key, portal_client):
    api_key, secret = echo_key
    snippet = snippets_of(portal_client, site, api_key.key_id)["snippet-token-node"]

    done = subprocess.run(  # noqa: S603
        ["node", "--input-type=module", "-e", snippet + "\nconsole.log(await accessToken(60));"],
        env={"KEY_SECRET": secret, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    token = done.stdout.strip()
    assert token.startswith("at_"), done.stderr
    status, _ = get_json(f"{site.url}/proxy/echo/{api_key.key_id}/", {"Authorization": f"Bearer {token}"})
    assert status == 200


class _JsonRpcNode(BaseHTTPRequestHandler):
    """An Ethereum node in miniature: answers eth_chainId and eth_blockNumber, single or batched, and
    records the methods it was asked (ethers batches its calls into one JSON array)."""

    answers = {"eth_chainId": "0x1", "eth_blockNumber": hex(BLOCK_NUMBER)}
    methods: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        calls = payload if isinstance(payload, list) else [payload]
        self.methods.extend(call["method"] for call in calls)
        results = [{"jsonrpc": "2.0", "id": c["id"], "result": self.answers[c["method"]]} for c in calls]
        body = json.dumps(results if isinstance(payload, list) else results[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def rpc_key(site, tenant):
    """A key on an upstream that speaks JSON-RPC, allowed exactly the two methods ethers needs here."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JsonRpcNode)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    _JsonRpcNode.methods = []
    upstream = global_upstream("mainnet", f"http://127.0.0.1:{server.server_address[1]}/")
    policies.clear()
    api_key, _ = services.api_key_create(
        tenant=tenant,
        name="dapp",
        upstreams=[upstream],
        allowed_rpc_methods=["eth_chainId", "eth_blockNumber"],
        actor="test",
    )
    yield api_key
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(
    shutil.which("node") is None or not (JS_MODULES / "ethers").is_dir(),
    reason="Node.js and portal/tests/js/node_modules (make test installs them) are needed",
)
def test_the_ethers_snippet_reads_the_block_number_through_the_proxy(site, rpc_key, portal_client):
    snippet = snippets_of(portal_client, site, rpc_key.key_id)["snippet-ethers"]

    done = subprocess.run(  # noqa: S603 - the page's snippet, run by node as a browser bundle would
        ["node", "--input-type=module", "-e", snippet],
        cwd=JS_MODULES.parent,  # where `import ... from "ethers"` resolves
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.stdout.strip() == str(BLOCK_NUMBER), done.stderr[-2000:]
    assert set(_JsonRpcNode.methods) == {"eth_chainId", "eth_blockNumber"}
