"""The real Segment and RudderStack SDKs, pinned and unmodified, installed once under .venv-sdk/
and run as subprocesses that send a list of calls and report what reached their error hooks."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testlib.processes import ROOT, VENV_BIN

SDK_DIR = ROOT / ".venv-sdk"
# Wire names of a call's fields, as the Python SDKs spell their arguments.
PYTHON_ARGUMENTS = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "groupId": "group_id",
    "previousId": "previous_id",
    "messageId": "message_id",
}
PYTHON_CLIENT = """
import json, sys
spec = json.load(sys.stdin)
if spec["package"] == "rudder":
    from rudderstack.analytics.client import Client
else:
    from segment.analytics.client import Client
errors = []
client = Client(
    spec["key"], host=spec["host"], sync_mode=spec["sync"], gzip=spec["gzip"],
    on_error=lambda error, batch: errors.append(str(error)), max_retries=spec["retries"],
    upload_interval=0.2,
)
for method, arguments in spec["calls"]:
    try:
        getattr(client, method)(**arguments)
    except Exception as error:  # sync_mode raises what async mode hands to on_error
        errors.append(f"{type(error).__name__}: {error}")
if not spec["sync"]:  # sync_mode has posted each call already, and has no consumer
    client.flush()
    client.join()
print(json.dumps({"errors": errors}))
"""
NODE_CLIENT = """
const { Analytics } = require('@segment/analytics-node')
let input = ''
process.stdin.on('data', (chunk) => { input += chunk })
process.stdin.on('end', async () => {
  const spec = JSON.parse(input)
  const analytics = new Analytics({
    writeKey: spec.key, host: spec.host, path: spec.path, maxRetries: spec.retries,
    flushInterval: 200,
  })
  const errors = []
  analytics.on('error', (error) => errors.push(String(error.reason ?? error.code ?? error)))
  for (const [method, args] of spec.calls) analytics[method](args)
  await analytics.closeAndFlush({ timeout: 120000 })
  console.log(JSON.stringify({ errors }))
})
"""


@dataclass(frozen=True)
class Sdk:
    """One pinned client: `name` for test ids, what to install, and the library it reports."""

    name: str
    requirement: str
    library: str

    @property
    def node(self) -> bool:
        return self.requirement.startswith("@")

    @property
    def home(self) -> Path:
        return SDK_DIR / self.name

    def install(self) -> None:
        marker = self.home / "installed"
        client = NODE_CLIENT if self.node else PYTHON_CLIENT
        if marker.is_file() and marker.read_text() == self.requirement + client:
            return
        if self.node:
            command = ["npm", "install", "--prefix", str(self.home), "--no-audit", "--no-fund",
                       "--loglevel=error", self.requirement]  # fmt: skip
            self.home.mkdir(parents=True, exist_ok=True)
            _run([*command])
            (self.home / "client.js").write_text(NODE_CLIENT)
        else:
            _run([str(VENV_BIN / "python"), "-m", "venv", "--clear", str(self.home)])
            _run([str(self.home / "bin" / "pip"), "install", "-q", self.requirement])
            (self.home / "client.py").write_text(PYTHON_CLIENT)
        marker.write_text(self.requirement + client)

    def send(
        self,
        api_url: str,
        key: str,
        calls: list[tuple[str, dict[str, Any]]],
        *,
        sync: bool = True,
        gzip: bool = False,
        retries: int = 3,
        path: str = "/segment/v1/batch",
        timeout: float = 180,
    ) -> list[str]:
        """Make `calls` (method, wire-named fields) through the SDK, flush, and return the
        errors its hooks saw."""
        if self.node:
            command = ["node", str(self.home / "client.js")]
            spec: dict[str, Any] = {"host": api_url, "path": path, "calls": calls}
        else:
            command = [str(self.home / "bin" / "python"), str(self.home / "client.py")]
            spec = {
                "package": "rudder" if "rudder" in self.name else "segment",
                "host": f"{api_url}/segment",
                "sync": sync,
                "gzip": gzip,
                "calls": [
                    (method, {PYTHON_ARGUMENTS.get(k, k): v for k, v in fields.items()})
                    for method, fields in calls
                ],
            }
        result = subprocess.run(
            command,
            input=json.dumps({**spec, "key": key, "retries": retries}),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
            check=False,
        )
        assert result.returncode == 0, f"{self.name} failed:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout.strip().splitlines()[-1])["errors"]


SEGMENT_240 = Sdk("segment-2.4.0", "segment-analytics-python==2.4.0", "analytics-python")
SEGMENT_234 = Sdk("segment-2.3.4", "segment-analytics-python==2.3.4", "analytics-python")
RUDDER = Sdk("rudder-2.1.9", "rudder-sdk-python==2.1.9", "analytics-python")
NODE = Sdk("node-3.1.0", "@segment/analytics-node@3.1.0", "@segment/analytics-node")
SDKS = (SEGMENT_240, SEGMENT_234, RUDDER, NODE)


def install_sdks() -> None:
    """Install every SDK (once: a later run finds them in place); fail loudly if one cannot."""
    with ThreadPoolExecutor(len(SDKS)) as pool:
        list(pool.map(Sdk.install, SDKS))


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"installing a Segment SDK failed: {' '.join(command)}\n{result.stdout}{result.stderr}"
        )
