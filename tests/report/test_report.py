"""Figures and report.html of a run: what each figure shows, and the page as headless Chromium renders it."""

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import matplotlib.axes
import numpy as np
import pytest
from conftest import MNIST_DIR, needs_mnist
from helpers import run_cli
from PIL import Image

from aekit.cli import main
from aekit.data.dataset import sample_index
from aekit.errors import RunError
from aekit.evaluation.metrics import formatted
from aekit.models import build_model, model_config
from aekit.models.inference import codes
from aekit.report import figures, plots
from aekit.report.html import render_report, write_report

FAST = ["--epochs", "2", "--no-progress", "--hidden", "32"]
ALL_FIGURES = {"reconstructions", "denoising", "samples", "codes", "manifold", "interpolations", "loss"}


def figures_of(run) -> set[str]:
    return {p.stem for p in (run / "figures").glob("*.png")}


def assert_readable_png(path, min_size=(300, 200)):
    """A PNG of a sensible size that is not one flat colour."""
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert image.shape[1] >= min_size[0] and image.shape[0] >= min_size[1], (path, image.shape)
    assert image.std() > 10, path


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A VAE with a 2-D code on digits: every figure but the denoising one."""
    out = tmp_path_factory.mktemp("report") / "vae"
    assert main(["train", "--model", "vae", "--code-dim", "2", "--out", str(out), *FAST]) == 0
    return out


def test_a_run_writes_every_figure_and_a_self_contained_report(vae_run):
    assert figures_of(vae_run) == ALL_FIGURES - {"denoising"}
    for path in (vae_run / "figures").glob("*.png"):
        assert_readable_png(path)
    page = (vae_run / "report.html").read_text()
    # The figures are inline, in reading order, byte for byte; nothing is fetched from anywhere.
    names = ["reconstructions", "samples", "codes", "manifold", "interpolations", "loss"]
    assert embedded_images(page) == [(vae_run / "figures" / f"{name}.png").read_bytes() for name in names]
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page and "url(" not in page
    metrics = json.loads((vae_run / "metrics.json").read_text())
    # Each metric in its registered format, with its description beside it.
    value = formatted("sse_per_example", metrics["sse_per_example"])
    assert f'<td class="number">{value}</td><td>sum of squared errors per test example; lower is better' in page
    assert "neg_elbo" in page
    assert "<th>code_dim</th><td>2</td>" in page  # the config


def test_evaluate_refreshes_the_report(capsys, vae_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(vae_run, run)
    (run / "report.html").unlink()
    assert run_cli(capsys, "evaluate", str(run))[0] == 0
    assert len(embedded_images((run / "report.html").read_text())) == 6


def test_what_the_figures_say(capsys, tmp_path, monkeypatch):
    """The codes figure names its projection; a denoising AE shows noisy, denoised and clean examples; PCA (one
    fitted 'epoch') still gets its loss figure; a code longer than 2 has no manifold."""
    titles = []
    original = matplotlib.axes.Axes.set_title

    def set_title(self, text, *args, **kwargs):
        titles.append(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", set_title)
    out = tmp_path / "dae"
    assert run_cli(capsys, "train", "--model", "dae", "--code-dim", "5", "--out", str(out), *FAST)[0] == 0
    assert figures_of(out) == ALL_FIGURES - {"samples", "manifold"}
    assert any("PCA projection of the 5-D code" in title for title in titles)
    titles.clear()
    out = tmp_path / "pca"
    assert run_cli(capsys, "train", "--model", "pca", "--code-dim", "2", "--out", str(out), "--no-progress")[0] == 0
    assert figures_of(out) == ALL_FIGURES - {"samples", "denoising"}
    assert any("the 2-D code itself" in title for title in titles)
    for name in ("denoising", "loss", "manifold"):
        assert_readable_png(tmp_path / ("dae" if name == "denoising" else "pca") / "figures" / f"{name}.png")


def test_the_codes_figure_draws_a_seeded_sample_of_a_larger_test_split(tmp_path, monkeypatch, digits):
    drawn = {}
    monkeypatch.setattr(figures, "CODES_SHOWN", 100)
    monkeypatch.setattr(
        figures, "save_codes", lambda path, *given: drawn.update(zip(("codes", "labels", "title"), given))
    )
    model = build_model(model_config("ae", digits.shape, code_dim=3, hidden=(8,)))
    figures.write_figures(model, digits, tmp_path, "AE")
    index = sample_index(len(digits.x_test), 100)
    np.testing.assert_array_equal(drawn["codes"], codes(model, digits.x_test[index]))
    np.testing.assert_array_equal(drawn["labels"], digits.y_test[index])
    assert f"(a seeded sample of 100 of {len(digits.x_test)})" in drawn["title"]


def test_colour_non_square_images_and_vectors(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for label, colour in enumerate([(230, 30, 30), (30, 30, 230)]):
        (tmp_path / "images" / str(label)).mkdir(parents=True)
        for i in range(30):
            pixels = np.zeros((6, 11, 3), np.uint8)
            pixels[1:5, i % 6 : i % 6 + 5] = colour
            Image.fromarray(pixels).save(tmp_path / "images" / str(label) / f"{i}.png")
    out = tmp_path / "colour"
    assert (
        run_cli(
            capsys,
            "train",
            "--model",
            "vae",
            "--code-dim",
            "2",
            "--dataset",
            str(tmp_path / "images"),
            "--out",
            str(out),
            *FAST,
        )[0]
        == 0
    )
    assert figures_of(out) == ALL_FIGURES - {"denoising"}
    reconstructions = np.asarray(Image.open(out / "figures" / "reconstructions.png").convert("RGB"), dtype=int)
    assert (np.abs(reconstructions[..., 0] - reconstructions[..., 2]) > 100).any()  # the colours survive
    np.save(tmp_path / "table.npy", rng.normal(size=(80, 7)).astype(np.float32))
    out = tmp_path / "table"
    assert (
        run_cli(
            capsys,
            "train",
            "--model",
            "aae",
            "--code-dim",
            "1",
            "--dataset",
            str(tmp_path / "table.npy"),
            "--out",
            str(out),
            *FAST,
        )[0]
        == 0
    )
    assert figures_of(out) == ALL_FIGURES - {"denoising", "manifold"}  # no pictures to lay on a grid of codes
    assert len(embedded_images((out / "report.html").read_text())) == 5


@needs_mnist
def test_mnist_figures(capsys, tmp_path):
    out = tmp_path / "mnist"
    assert (
        run_cli(
            capsys,
            "train",
            "--model",
            "ae",
            "--dataset",
            "mnist",
            "--data-dir",
            str(MNIST_DIR),
            "--code-dim",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "512",
            "--hidden",
            "32",
            "--no-progress",
            "--out",
            str(out),
        )[0]
        == 0
    )
    assert figures_of(out) == ALL_FIGURES - {"denoising", "samples"}
    for path in (out / "figures").glob("*.png"):
        assert_readable_png(path)


def test_tile_places_non_square_colour_images_row_by_row():
    images = np.random.default_rng(0).uniform(size=(5, 3, 2, 4)).astype(np.float32)
    canvas = plots.tile(images, columns=3, gap=1, fill=-1)
    assert canvas.shape == (2 * 2 + 1, 3 * 4 + 2, 3)
    np.testing.assert_array_equal(canvas[3:5, 5:9], images[4].transpose(1, 2, 0))
    assert (canvas[2] == -1).all() and (canvas[3:, 10:] == -1).all()  # the gap row and the empty last cell


def test_intensities_are_drawn_as_they_are_and_real_valued_images_on_the_datas_range():
    originals = np.linspace(0, 1, 32, dtype=np.float32).reshape(2, 1, 4, 4)
    overshoot = originals * 1.2 - 0.1  # a reconstruction (PCA's) a little outside [0, 1]
    shown = plots.shown_as_intensities([originals, overshoot])
    assert shown[0] is originals and shown[1] is overshoot  # black stays black; the overshoot is clipped when drawn
    real = originals * 200 - 50
    data, model = plots.shown_as_intensities([real, real / 2])
    np.testing.assert_allclose(data, originals, atol=1e-6)
    np.testing.assert_allclose(model, (real / 2 + 50) / 200, atol=1e-6)


@pytest.mark.slow
def test_the_report_modules_load_without_torch_or_the_run_folder_code():
    code = (
        "import sys, aekit.report.plots, aekit.report.html, aekit.report.projector; "
        "held = {'torch', 'aekit.training.run_folder'} & set(sys.modules); assert not held, sorted(held)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_report_page_escapes_text_formats_numbers_and_refuses_missing_figures(tmp_path):
    page = render_report(
        "a <b> & c",
        {"options": {"hidden": [256, 128], "note": "<script>"}, "v": None},
        [{"model": "ae", "mse": 0.0123456, "parameters": np.int64(1234)}, {"model": "pca"}],
        [],
    )
    assert "<b>" not in page and "&lt;b&gt; &amp; c" in page and "&lt;script&gt;" in page
    assert '<td class="number">0.01235</td>' in page and '<td class="number">1234</td>' in page
    assert "<td>256, 128</td>" in page and page.count("<td>-</td>") == 3  # v, and pca's two missing numbers
    with pytest.raises(RunError, match="missing.png"):
        write_report(tmp_path / "report.html", "t", {}, [], [tmp_path / "missing.png"])
    assert not (tmp_path / "report.html").exists()


# --- the page in a real browser -------------------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium binary on PATH (CI installs Debian's chromium package)")


class Browser:
    """Headless Chromium driven over the DevTools protocol (a websocket; websocket-client), with every console
    message, uncaught exception and browser log entry of the page collected."""

    def __init__(self, tmp_path):
        websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
        profile = tmp_path / "profile"
        self.process = subprocess.Popen(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--window-size=1280,1600",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._wait_for_port(profile / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                [page] = [t for t in json.load(response) if t["type"] == "page"]
            self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.events, self.next_id = [], 0
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _wait_for_port(self, path) -> int:
        deadline = time.monotonic() + 60
        while not (path.exists() and path.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not open its DevTools port (exit {self.process.poll()})")
            time.sleep(0.1)
        return int(path.read_text().split()[0])

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(json.loads(self.socket.recv()))

    def open(self, path) -> None:
        self.events.clear()
        self.call("Page.navigate", url=path.as_uri())
        self.wait_for("Page.loadEventFired")

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(f"console.{params['type']}: {params['args']}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        return found

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    def screenshot(self) -> np.ndarray:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.float32)

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def browser(tmp_path):
    _chromium()
    opened = Browser(tmp_path)
    yield opened
    opened.close()


@pytest.mark.slow  # starts headless Chromium
def test_report_renders_in_chromium_without_errors_and_shows_the_figures(browser, vae_run, tmp_path):
    browser.open(vae_run / "report.html")
    assert browser.errors() == []
    images = browser.evaluate(
        "Array.from(document.images, i => { const r = i.getBoundingClientRect(); "
        "return [i.complete, i.naturalWidth, i.naturalHeight, r.left, r.top, r.width, "
        "r.height]; })"
    )
    assert len(images) == 6
    for complete, natural_width, natural_height, *_, width, height in images:
        assert complete and natural_width > 0 and natural_height > 0 and width > 0 and height > 0
    assert browser.evaluate("document.title").startswith("vae on digits")
    screenshot = browser.screenshot()
    assert screenshot.std() > 10  # not a blank page
    left, top, width, height = (int(v) for v in images[0][3:])
    shown = screenshot[top : top + height, left : left + width]  # the first figure, as drawn on the screen
    assert shown.size and shown.std() > 20 and len(np.unique(shown.reshape(-1, 3), axis=0)) > 20
    Image.fromarray(screenshot.astype(np.uint8)).save(tmp_path / "screenshot.png")

    # The same checks see a page that is broken: they are not blind.
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><img src="missing.png"><script>console.error("boom")</script></body></html>')
    browser.open(broken)
    assert any("boom" in error for error in browser.errors())
    assert browser.evaluate("document.images[0].naturalWidth") == 0
