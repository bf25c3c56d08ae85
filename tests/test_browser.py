"""The report in a real browser: headless Chromium, driven over its DevTools protocol (CDP) from Python.

The page must load without a console error or exception, show every image, follow its sliders (moved with the
mouse, as a person would), and look like something: a screenshot's image area holds real picture pixels.

Needs Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it when it can) and
``websocket-client`` (in the ``dev`` extra); skips, saying which is missing, without them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tiny import review_logs

from lightning_cnnsee import cli

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 30.0


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class Chromium:
    """A headless Chromium with one page, driven over CDP; ``with Chromium() as browser:`` always ends the process.

    ``browser.events`` collects every CDP event (console messages, exceptions, log entries) since the start.
    """

    def __init__(self, executable: str, width: int = 1200, height: int = 900) -> None:
        self.executable, self.width, self.height = executable, width, height
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._process: subprocess.Popen | None = None
        self._socket: Any = None
        self._profile = tempfile.mkdtemp(prefix="cnnsee-chromium-")

    def __enter__(self) -> Chromium:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> None:
        import websocket

        log = open(os.path.join(self._profile, "chromium.log"), "wb")
        self._process = subprocess.Popen(
            [
                self.executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--mute-audio",
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        port_file = Path(self._profile) / "DevToolsActivePort"  # Chromium writes its port here once listening
        deadline = time.monotonic() + TIMEOUT_S
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start: {self.log_tail()}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT_S) as response:
                pages = [target for target in json.load(response) if target.get("type") == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not pages:
            raise RuntimeError("Chromium opened no page")
        self._socket = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=TIMEOUT_S, suppress_origin=True
        )
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )

    def log_tail(self) -> str:
        try:
            return (Path(self._profile) / "chromium.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one CDP command and return its result; events that arrive meanwhile go to ``events``."""
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(f"no answer to {method} in {TIMEOUT_S} s")

    def wait_for_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for event in self.events:
                if event["method"] == method:
                    return event
            self.events.append(json.loads(self._socket.recv()))
        raise TimeoutError(f"no {method} in {TIMEOUT_S} s")

    def open(self, path: Path) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited); a thrown error fails the test."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A left click at page coordinates (x, y), as a mouse would."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1},
            )

    def screenshot(self) -> Image.Image:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries since the page was opened."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                found.append(f"log {params['entry'].get('level')}: {params['entry'].get('text')}")
        return found

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except Exception:
                pass
        if self._process is not None:
            self._process.kill()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            "no Chromium found (looked for chromium, chromium-browser, google-chrome): install Debian's "
            "chromium (apt-get install chromium) to run the browser test"
        )
    try:
        import websocket  # noqa: F401  (websocket-client, in the dev extra)
    except ImportError:
        pytest.skip("websocket-client is not installed (pip install -e '.[dev]'): needed to drive Chromium")
    return executable


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("browser") / "report.html"
    assert cli.main(["report", str(review_logs(tmp_path_factory)), "-o", str(path)]) == 0
    return path


def picture_pixels(image: Image.Image) -> tuple[int, float]:
    """(distinct colours, standard deviation of the grey levels): a blank or flat area has few and ~0."""
    array = np.asarray(image)
    return len(np.unique(array.reshape(-1, 3), axis=0)), float(array.mean(axis=2).std())


@pytest.mark.timeout(180)
def test_the_report_works_in_headless_chromium(chromium, report_file):
    with Chromium(chromium) as browser:
        browser.open(report_file)
        # every image decoded and shown
        state = browser.evaluate("""
            Promise.all(Array.from(document.images).map(img => img.decode().then(() => true, () => false)))
              .then(decoded => ({
                count: document.images.length,
                decoded: decoded.filter(Boolean).length,
                shown: Array.from(document.images).filter(img => img.naturalWidth > 0 && img.width > 0).length,
                sections: document.querySelectorAll("section.tag").length,
              }))""")
        assert state["count"] > 8 and state["decoded"] == state["count"] and state["shown"] == state["count"], state

        # move the first tag's slider to its first step with a mouse click at the slider's left end
        section = "document.querySelector('section.tag')"
        before = browser.evaluate(f"""({{
            label: {section}.querySelector('.step-label').textContent,
            steps: Array.from({section}.querySelectorAll('img')).map(img => img.dataset.step),
            srcs: Array.from({section}.querySelectorAll('img')).map(img => img.src.length + ':' + img.src.slice(-40)),
            box: {section}.querySelector('input.step-slider').getBoundingClientRect().toJSON(),
        }})""")
        assert before["label"] == "step 12" and before["steps"] == ["12", "6"]  # version_1 has no step 12
        browser.evaluate(f"{section}.scrollIntoView()")
        box = browser.evaluate(f"{section}.querySelector('input.step-slider').getBoundingClientRect().toJSON()")
        browser.click(box["left"] + 1, box["top"] + box["height"] / 2)
        after = browser.evaluate(f"""({{
            label: {section}.querySelector('.step-label').textContent,
            value: {section}.querySelector('input.step-slider').value,
            steps: Array.from({section}.querySelectorAll('img')).map(img => img.dataset.step),
            srcs: Array.from({section}.querySelectorAll('img')).map(img => img.src.length + ':' + img.src.slice(-40)),
            stale: Array.from({section}.querySelectorAll('.cell')).map(cell => cell.classList.contains('stale')),
        }})""")
        assert after["value"] == "0" and after["label"] == "step 0", after
        assert after["steps"] == ["0", "0"] and after["stale"] == [False, False]
        assert all(a != b for a, b in zip(after["srcs"], before["srcs"], strict=True)), (
            "the images did not change with the step"
        )

        # the slider at the top moves every tag; with the middle step, every section shows step 6
        labels = browser.evaluate("""(() => {
            const all = document.getElementById('all-steps');
            all.value = '1';
            all.dispatchEvent(new Event('input', {bubbles: true}));
            return Array.from(document.querySelectorAll('section.tag')).map(s => [
              s.querySelector('h2').textContent, s.querySelector('.step-label').textContent]);
        })()""")
        assert {label for tag, label in labels if "<script>" not in tag} == {"step 6"}
        assert [label for tag, label in labels if "<script>" in tag] == ["step 0"]  # its steps: 0, 12
        # back at the last step, the first tag shows the pictures the page opened with
        back = browser.evaluate(f"""(() => {{
            const all = document.getElementById('all-steps');
            all.value = all.max;
            all.dispatchEvent(new Event('input', {{bubbles: true}}));
            return Array.from({section}.querySelectorAll('img')).map(img => img.src.length + ':' + img.src.slice(-40));
        }})()""")
        assert back == before["srcs"]

        # hiding a run hides its column everywhere
        hidden = browser.evaluate("""(() => {
            const box = document.querySelector('input[type=checkbox][data-run="1"]');
            box.click();
            return Array.from(document.querySelectorAll('.cell[data-run="1"]')).every(c => c.offsetParent === null);
        })()""")
        assert hidden
        browser.evaluate("document.querySelector('input[type=checkbox][data-run=\"1\"]').click()")

        # what a person sees: the first image's area holds a real picture
        browser.evaluate("window.scrollTo(0, 0); document.querySelector('section.tag').scrollIntoView()")
        box = browser.evaluate("document.querySelector('section.tag img').getBoundingClientRect().toJSON()")
        shot = browser.screenshot()
        assert shot.size == (1200, 900)
        area = shot.crop((int(box["left"]), int(box["top"]), int(box["right"]), int(min(box["bottom"], 900))))
        colours, spread = picture_pixels(area)
        assert area.width > 50 and area.height > 20 and colours > 50 and spread > 10, (area.size, colours, spread)
        assert browser.problems() == []


@pytest.mark.timeout(180)
def test_the_scalar_charts_show_in_headless_chromium(chromium, report_file):
    with Chromium(chromium) as browser:
        browser.open(report_file)
        # one <svg> per chart of the page's data, one drawn line per series with a point per logged value
        charts = browser.evaluate("""(() => {
            const data = JSON.parse(document.getElementById('cnnsee-data').textContent);
            const svgs = Array.from(document.querySelectorAll('svg.chart'));
            return {
              expected: data.charts.map(chart => chart.series.map(series => series.points.length)),
              drawn: svgs.map(svg => Array.from(svg.querySelectorAll('polyline')).map(l => l.points.numberOfItems)),
              widths: svgs.map(svg => Array.from(svg.querySelectorAll('polyline')).map(l => l.getBBox().width)),
              markers: svgs.map(svg => Array.from(svg.querySelectorAll('.series')).map(
                g => g.querySelectorAll('circle').length)),
              shown: svgs.map(svg => svg.getBoundingClientRect().width),
              legends: svgs.map(svg => svg.querySelectorAll('.legend text').length),
            };
        })()""")
        assert len(charts["drawn"]) >= 3 and charts["drawn"] == charts["expected"], charts
        assert all(width > 100 for width in charts["shown"])
        # a line of two points or more spans the chart; a single point is drawn as a marker
        for widths, markers, counts in zip(charts["widths"], charts["markers"], charts["expected"], strict=True):
            for width, marker_count, count in zip(widths, markers, counts, strict=True):
                assert width > 0 if count > 1 else marker_count == 1, charts
        assert charts["legends"] == [len(series) for series in charts["expected"]]

        # hiding a run hides its lines in every chart
        hidden = browser.evaluate("""(() => {
            document.querySelector('input[type=checkbox][data-run="1"]').click();
            const lines = Array.from(document.querySelectorAll('svg.chart .series[data-run="1"]'));
            const result = lines.length > 0 && lines.every(line => getComputedStyle(line).display === 'none');
            document.querySelector('input[type=checkbox][data-run="1"]').click();
            return result;
        })()""")
        assert hidden

        # what a person sees: the first chart's area holds its first line's colour
        browser.evaluate("document.querySelector('svg.chart').scrollIntoView()")
        box = browser.evaluate("document.querySelector('svg.chart').getBoundingClientRect().toJSON()")
        color = browser.evaluate("document.querySelector('svg.chart polyline').getAttribute('stroke')")
        shot = browser.screenshot()
        area = np.asarray(
            shot.crop((int(box["left"]), int(box["top"]), int(box["right"]), int(min(box["bottom"], shot.height)))),
            dtype=int,
        )
        target = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
        near = (np.abs(area - target).sum(axis=2) < 60).sum()
        assert near > 100, (color, near)
        assert browser.problems() == []
