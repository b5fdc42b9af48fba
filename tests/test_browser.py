"""Open the rendered report in headless Chromium: no console errors, no broken images,
no network fetches, and a screenshot that is a real, non-blank PNG.

Talks the DevTools protocol over `--remote-debugging-pipe` (fd 3 in, fd 4 out,
NUL-separated JSON) with the standard library only: no extra test dependency.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_runs import PLOT_NAMES, rendered_study
from PIL import Image

pytestmark = pytest.mark.browser

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 30.0

# Runs in the page after load: what a reader would see broken.
CHECK_JS = """
(() => {
  const imgs = Array.from(document.images).map(i => ({
    src: i.src.slice(0, 30), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight
  }));
  const sections = Array.from(document.querySelectorAll('section')).map(s => s.id);
  const answer = document.querySelector('#answer .answer p');
  return {
    title: document.title,
    images: imgs,
    sections: sections,
    answer: answer ? answer.innerText : null,
    height: document.documentElement.scrollHeight,
    scripts: document.scripts.length,
    stylesheets: Array.from(document.styleSheets).filter(s => s.href).length
  };
})()
"""


def _chromium() -> str | None:
    override = os.environ.get("CHROMIUM")
    if override:
        return override if shutil.which(override) else None
    return next((shutil.which(c) for c in CANDIDATES if shutil.which(c)), None)


class DevTools:
    """A minimal Chrome DevTools Protocol client over the remote-debugging pipe."""

    def __init__(self, exe: str, profile: Path, log: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:
            # Move both ends out of the way first, then onto fds 3 and 4.
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",  # CI containers run as root
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=child_fds,
            pass_fds=(3, 4),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and wait for its result, keeping every event seen meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("Chromium did not answer on the DevTools pipe")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        if self._log.closed:
            return
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


# Runs in the page of a CPU demo: what a reader meets first, and every visible sentence.
SCOPE_JS = """
(() => {
  const top = el => el ? el.getBoundingClientRect().top + window.scrollY : null;
  const scope = document.querySelector('#scope');
  const answer = document.querySelector('#answer');
  const firstShown = answer ? Array.from(answer.children).find(
    el => el.innerText.trim() && el.getBoundingClientRect().height > 0) : null;
  return {
    scope: scope ? scope.innerText : null,
    scopeTop: top(scope),
    scopeHeight: scope ? scope.getBoundingClientRect().height : 0,
    answerBoxTop: top(document.querySelector('#answer .answer')),
    headingTops: Array.from(document.querySelectorAll('h2')).map(top),
    firstShownId: firstShown ? firstShown.id : null,
    answer: document.querySelector('#answer .answer').innerText,
    visible: document.body.innerText,
    headers: Array.from(document.querySelectorAll('th')).map(th => th.innerText)
  };
})()
"""
# What a page must not say when no GPU was used, nor when nothing was measured.
GPU_CLAIMS = ("GPU-bound", "host-bound", "GPU time", "GPU-busy", "GPU worked", "GPU's work",
              "attention GPU", "kernel savings", "Amdahl")  # fmt: skip


def _open(tmp_path_factory, study: str, js: str) -> dict[str, Any]:
    """Render `study` through the real scripts, load it in headless Chromium, run `js`."""
    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium not found (apt-get install -y chromium, or set CHROMIUM)")
    report = rendered_study(tmp_path_factory.getbasetemp(), study) / "report.html"
    work = tmp_path_factory.mktemp("chromium")
    browser = DevTools(exe, work / "profile", work / "chromium.log")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 1600, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        browser.send("Page.navigate", {"url": report.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        checked = browser.send(
            "Runtime.evaluate", {"expression": js, "returnByValue": True}, session=session
        )["result"]["value"]
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
        png = base64.b64decode(shot["data"])
        (work / "report.png").write_bytes(png)
        return {"events": browser.events, "check": checked, "png": png, "url": report.as_uri()}
    except (RuntimeError, TimeoutError, KeyError, OSError) as exc:
        browser.close()
        tail = (work / "chromium.log").read_text(errors="replace")[-2000:]
        raise AssertionError(
            f"driving Chromium failed: {exc}\n--- chromium log ---\n{tail}"
        ) from exc
    finally:
        browser.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict[str, Any]:
    return _open(tmp_path_factory, "gpu", CHECK_JS)


@pytest.fixture(scope="module")
def cpu_demo(tmp_path_factory) -> dict[str, Any]:
    return _open(tmp_path_factory, "cpu-demo", SCOPE_JS)


def test_cpu_demo_says_smoke_test_and_no_gpu_before_anything_else(cpu_demo):
    """The first thing under the title is the smoke-test box, above the answer and every
    heading, on screen without scrolling (issue 25: it sat below the answer)."""
    check = cpu_demo["check"]
    assert check["scope"] and check["scope"].startswith(
        "Read this first: these numbers are a smoke test on a CPU"
    )
    assert "No GPU was used" in check["scope"] and "do not quote them" in check["scope"]
    assert check["firstShownId"] == "scope"
    assert check["scopeHeight"] > 20 and check["scopeTop"] < 400
    assert check["scopeTop"] < check["answerBoxTop"]
    assert all(check["scopeTop"] < t for t in check["headingTops"])


def test_cpu_demo_makes_no_gpu_claim_and_calls_zero_map_not_measurable(cpu_demo):
    check = cpu_demo["check"]
    said = [c for c in GPU_CLAIMS if c in check["visible"]]
    assert said == [], said
    assert not [h for h in check["headers"] if "GPU time" in h or h.startswith("gpu_ms")]
    assert "CPU op time per step" in check["answer"]
    assert "Regime: not measurable here" in check["answer"]
    accuracy = next(s for s in check["answer"].split("\n") if s.startswith("Accuracy"))
    assert "not measurable here" in accuracy and "is 0 in every run" in accuracy
    assert "tested statement" not in check["visible"]
    assert "equivalent within" not in accuracy


def test_no_console_errors_or_exceptions(page):
    errors = []
    for event in page["events"]:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"])
        elif method == "Network.loadingFailed":
            errors.append(f"failed to load: {params.get('errorText')}")
    assert errors == []


def test_no_network_fetches_beyond_the_file(page):
    urls = [
        e["params"]["request"]["url"]
        for e in page["events"]
        if e.get("method") == "Network.requestWillBeSent"
    ]
    fetched = [u for u in urls if not u.startswith("data:") and u != page["url"]]
    assert fetched == []


def test_images_load_and_page_is_complete(page):
    check = page["check"]
    assert check["title"].startswith("Which attention kernel")
    assert len(check["images"]) == len(PLOT_NAMES)
    for image in check["images"]:
        assert image["src"].startswith("data:image/png")
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
    assert check["sections"][0] == "answer"
    assert {"tables", "plots", "provenance", "availability", "dataset", "seed-study",
            "environment", "config"} <= set(check["sections"])  # fmt: skip
    assert check["answer"] and check["answer"].startswith("Kernel provenance: all 11")
    assert check["scripts"] == 0 and check["stylesheets"] == 0


def test_screenshot_is_a_non_blank_png(page):
    png = page["png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (1280, 1600)
    pixels = np.asarray(image)
    assert pixels.std() > 10  # not one flat colour
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    assert len(np.unique(packed)) > 50  # text, tables and colour
