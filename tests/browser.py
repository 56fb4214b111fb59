"""Test helpers: a static file server on 127.0.0.1 and headless Chromium driven over WebDriver.

Debian's ``chromium`` and ``chromium-driver`` packages provide the browser
and ``chromedriver``; this module speaks WebDriver's JSON-over-HTTP protocol
with urllib, so the tests need nothing beyond the standard library.  The
browser resolves no host name but 127.0.0.1, so a page that still needed the
network would fail here just as it would offline.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, List, Optional, Tuple

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # No network: every host name but the test server's address fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,900",
]
INSTALL_HINT = "install Debian's browser: apt-get install -y chromium chromium-driver"


class StaticServer:
    """Serve a directory on 127.0.0.1 in a thread, recording every request and its status."""

    def __init__(self, root: Path) -> None:
        requests: List[Tuple[str, int]] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                requests.append((self.path, int(code)))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.requests = requests
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "StaticServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """One headless Chromium session through chromedriver; use as a context manager."""

    def __init__(self, timeout: float = 60.0) -> None:
        chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
        if chromium is None or driver is None:
            raise RuntimeError(f"chromium or chromedriver not found: {INSTALL_HINT}")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="cowmem-chromium-")
        port = _free_port()
        self._base = f"http://127.0.0.1:{port}"
        self._driver = subprocess.Popen([driver, f"--port={port}"], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._session: Optional[str] = None
        try:
            self._wait_for_driver()
            args = CHROMIUM_FLAGS + [f"--user-data-dir={self._profile.name}"]
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args}}}})
            self._session = value["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_for_driver(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or self._driver.poll() is not None:
                    raise RuntimeError("chromedriver did not start") from None
                time.sleep(0.05)

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout + 30) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as exc:
            detail = json.load(exc).get("value", {})
            raise RuntimeError(f"WebDriver {method} {path}: {detail.get('error')}: "
                               f"{detail.get('message', '')[:500]}") from None

    def _command(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        return self._call(method, f"/session/{self._session}{path}", body)

    def get(self, url: str) -> None:
        """Load ``url`` (WebDriver returns once the document has loaded)."""
        self._command("POST", "/url", {"url": url})

    def execute(self, script: str, *args: Any) -> Any:
        """Run a function body in the page and return its JSON-able result."""
        return self._command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, expression: str, what: str) -> Any:
        """Poll a JavaScript expression until truthy; past the timeout, fail naming ``what``."""
        deadline = time.monotonic() + self.timeout
        while True:
            value = self.execute(f"try {{ return ({expression}); }} catch (e) {{ return null; }}")
            if value:
                return value
            if time.monotonic() > deadline:
                url = self.execute("return location.href")
                raise AssertionError(f"timed out waiting for {what} at {url}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._command("GET", "/screenshot")))
        return path

    def close(self) -> None:
        if self._session is not None:
            try:
                self._command("DELETE", "")
            finally:
                self._session = None
        self._driver.terminate()
        try:
            self._driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._driver.kill()
            self._driver.wait()
        self._profile.cleanup()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
