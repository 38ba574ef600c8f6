#!/usr/bin/env python3
"""Render a running Flower's tasks page in headless Chromium and save it as a PNG.

    .venv/bin/python scripts/flower_screenshot.py [--url http://127.0.0.1:5555] \
        [--page /tasks] [--output docs/flower.png]

The login comes from FLOWER_BASIC_AUTH (user:password) or --login. Chromium cannot be handed
basic-auth credentials on its command line, so a small proxy on 127.0.0.1 adds the
Authorization header to every request it forwards to Flower; nothing leaves the machine.
Needs Debian's chromium (`apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def authenticating_proxy(upstream: str, login: str) -> ThreadingHTTPServer:
    """A proxy on a free local port that forwards to `upstream` with the login added."""
    authorization = "Basic " + base64.b64encode(login.encode()).decode()

    class Forward(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.forward(None)

        def do_POST(self) -> None:  # the tasks table loads its rows with a POST
            self.forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def forward(self, body: bytes | None) -> None:
            headers = {"Authorization": authorization}
            if self.headers.get("Content-Type"):
                headers["Content-Type"] = self.headers["Content-Type"]
            request = urllib.request.Request(
                upstream.rstrip("/") + self.path, data=body, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status, headers, body = response.status, response.headers, response.read()
            except urllib.error.HTTPError as error:
                status, headers, body = error.code, error.headers, error.read()
            self.send_response(status)
            for name in ("Content-Type", "Location"):
                if headers.get(name):
                    self.send_header(name, headers[name])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the terminal quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def screenshot(url: str, output: Path, width: int = 1600, height: int = 900) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed: apt-get install -y chromium")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                # Give the page's own requests (the tasks table) time to finish before the shot.
                "--virtual-time-budget=10000",
                f"--screenshot={output.resolve()}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5555", help="Flower's address")
    parser.add_argument("--login", default=os.environ.get("FLOWER_BASIC_AUTH"), help="user:pass")
    parser.add_argument("--page", default="/tasks", help="the Flower page to render")
    parser.add_argument("--output", type=Path, default=Path("docs/flower.png"))
    options = parser.parse_args()
    if not options.login or ":" not in options.login:
        sys.exit("set FLOWER_BASIC_AUTH=user:password or pass --login user:password")
    proxy = authenticating_proxy(options.url, options.login)
    try:
        host, port = proxy.server_address[:2]
        screenshot(f"http://{host}:{port}{options.page}", options.output)
    finally:
        proxy.shutdown()
    print(f"saved {options.output}")


if __name__ == "__main__":
    main()
