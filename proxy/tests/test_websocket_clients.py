"""Real Ethereum clients over the WebSocket relay, with only the URL changed: ethers.js's
WebSocketProvider (Node.js) and web3.py's WebSocketProvider read the block number and receive newHeads
notifications from ganache (a real JSON-RPC WebSocket node, from npm) on loopback, through bin/serve.
Skipped, as the other JavaScript tests are, when portal/tests/js's npm packages are not installed."""

import asyncio
import html
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keys import services
from proxy.tests.test_processes import pytestmark as processes_marks
from proxy.tests.test_processes import serve

JS = Path(__file__).resolve().parents[2] / "portal" / "tests" / "js"
GANACHE = JS / "node_modules" / "ganache" / "dist" / "node" / "cli.js"

pytestmark = [
    *processes_marks,
    pytest.mark.skipif(
        shutil.which("node") is None
        or not GANACHE.is_file()
        or not (JS / "node_modules" / "ethers").is_dir(),
        reason="needs Node.js and portal/tests/js's npm packages (ganache, ethers): make test installs them",
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ganache():
    """ganache on loopback, mining a block every second (so newHeads notifications come unasked)."""
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - our own test dependency
        ["node", str(GANACHE), "--server.host", "127.0.0.1", "--server.port", str(port)]
        + ["--miner.blockTime", "1", "--logging.quiet", "--wallet.totalAccounts", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("ganache did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def ganache_key(transactional_db, tenant, ganache):
    """A key on ganache with a JSON-RPC allowlist, so the per-message checks run."""
    upstream = services.upstream_create(
        tenant=None,
        slug="ganache",
        base_url=ganache,
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
    )
    key, _ = services.api_key_create(
        tenant=tenant,
        name="dapp",
        upstreams=[upstream],
        actor="test",
        allowed_rpc_methods=[
            "eth_blockNumber",
            "eth_chainId",
            "eth_subscribe",
            "eth_unsubscribe",
            "net_version",
        ],
    )
    return key


@pytest.fixture
def proxied_ganache(ganache_key):
    """The proxy's WebSocket URL for ganache."""
    with serve() as served:
        yield f"{served.replace('http://', 'ws://')}/proxy/ganache/{ganache_key.key_id}"


ETHERS_SCRIPT = """
import { WebSocketProvider } from "ethers";
const provider = new WebSocketProvider(process.env.WS_URL);
const number = await provider.getBlockNumber();
const heads = await new Promise((resolve) => {
  const seen = [];
  provider.on("block", (block) => { seen.push(block); if (seen.length === 2) resolve(seen); });
});
console.log(JSON.stringify({ number, heads }));
await provider.destroy();
"""


def test_ethers_websocket_provider_reads_the_block_number_and_gets_new_heads(proxied_ganache):
    done = subprocess.run(  # noqa: S603 - our own script
        ["node", "--input-type=module", "-e", ETHERS_SCRIPT],
        cwd=JS,  # where `import ... from "ethers"` resolves
        env={"PATH": "/usr/bin:/bin", "WS_URL": proxied_ganache},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(seen["number"], int)
    assert len(seen["heads"]) == 2 and seen["heads"][1] > seen["heads"][0] >= seen["number"]


def test_web3_py_websocket_provider_reads_the_block_number_and_gets_new_heads(proxied_ganache):
    limit = sys.getrecursionlimit()
    web3 = pytest.importorskip("web3")
    # web3 imports py_ecc, which raises the interpreter's recursion limit to 100,000 for good: then the
    # checks' refusal of bottomless JSON (a RecursionError) becomes a C stack overflow in later tests.
    sys.setrecursionlimit(limit)

    async def run() -> tuple[int, list[int]]:
        async with web3.AsyncWeb3(web3.WebSocketProvider(proxied_ganache)) as w3:
            number = await w3.eth.block_number
            await w3.eth.subscribe("newHeads")
            heads = []
            async for message in w3.socket.process_subscriptions():
                heads.append(message["result"]["number"])
                if len(heads) == 2:
                    break
            return number, heads

    number, heads = asyncio.run(asyncio.wait_for(run(), 30))
    assert heads[1] > heads[0] >= number


def test_the_key_pages_ethers_websocket_snippet_runs_as_pasted(ganache_key, portal_client):
    from keys.models import Role
    from portal.tests.test_portal_snippets import SNIPPET_RE

    with serve() as served:
        page = portal_client(Role.VIEWER).get(
            f"/portal/keys/{ganache_key.key_id}", HTTP_HOST=served.removeprefix("http://")
        )
        snippets = {name: html.unescape(code) for name, code in SNIPPET_RE.findall(page.content.decode())}
        snippet = snippets["snippet-ethers-ws"]
        assert f"{served.replace('http://', 'ws://')}/proxy/ganache/{ganache_key.key_id}/" in snippet
        done = subprocess.run(  # noqa: S603 - the page's snippet, as pasted, stopped after a new block
            [
                "node",
                "--input-type=module",
                "-e",
                snippet + "\nprovider.once('block', () => process.exit(0));",
            ],
            cwd=JS,
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].isdigit() and lines[1].startswith("new block "), lines
