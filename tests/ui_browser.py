"""Real-browser testing of the Gradio UI: the servers, headless Chromium and page helpers.

Used by ``tests/test_browser.py``; another test module reuses it by importing the fixtures
(``from tests.ui_browser import browser, ui_page, ui_stack  # noqa: F401``) and the helpers.

* :class:`UiStack` runs the HTTP API in-process (the FastAPI app over a local backend, under
  uvicorn in a thread) and the Gradio UI pointed at it, each on a free loopback port; the
  API can be stopped and started again on the same port (the "server down" case).
* :func:`find_chromium` finds the system Chromium (Debian's ``chromium``; ``make test``
  installs it): Playwright drives it through ``executable_path`` and never downloads a browser.
* :class:`SeguePage` names what a person sees and does on the page, by role and label.

The browser reaches loopback only: every other request is aborted and host names other than
127.0.0.1 do not resolve.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from serve_app.artifacts import bundle
from serve_app.artifacts.events import EventLog
from serve_app.shell.backend import LocalBackend
from serve_app.shell.http import create_app
from serve_app.shell.service import Service

# Gradio's usage analytics and version check would call out of the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from ui.app import build, launch_options  # noqa: E402  (after the variable above)
from ui.client import Api  # noqa: E402
from ui.songs import SEP  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "reports" / "screenshots"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_MS = 20_000  # one wait on the page (a cold Gradio answer on a busy 2-core machine)
LOOPBACK_ONLY = re.compile(r"^(?!(?:https?|wss?)://127\.0\.0\.1[:/])[a-z]+://")

expect.set_options(timeout=TIMEOUT_MS)


def find_chromium() -> str | None:
    """The Chromium executable: ``$SEGUE_CHROMIUM``, else the first of :data:`CHROMIUM_NAMES` on PATH."""
    given = os.environ.get("SEGUE_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else shutil.which(given)
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """The FastAPI app under uvicorn in a background thread on 127.0.0.1:``port``; restartable."""

    def __init__(self, app, port: int) -> None:
        self.app, self.port = app, port
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"segue-api-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start on {self.url}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.server is None:
            return
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)
        self.server = self.thread = None

    @property
    def running(self) -> bool:
        return self.server is not None


@dataclass
class UiStack:
    """The API and the UI for one test module, and a client of the API for expected answers."""

    service: Service
    api_server: ApiServer
    api: Api  # a direct client of the API (not the UI's)
    ui: object  # the launched gr.Blocks
    ui_url: str
    events: str  # the API's event log
    chosen: dict = field(default_factory=dict)  # memo of songs picked for the tests

    def song(self, row: int) -> tuple[str, str]:
        catalog = self.service.front.bundle.catalog
        return str(catalog.name[row]), str(catalog.artist[row])

    def recommend(
        self,
        title: str,
        artist: str | None,
        w1: float = 0.3,
        w2: float = 0.7,
        diversity: float = 0.0,
        k: int = 10,
        **more: object,
    ) -> list[str]:
        """``title — artist`` of what the API answers for the body the UI would send (``more``:
        other fields of the body, such as ``filters`` or ``avoid``)."""
        body = {"song": title, "artist": artist, "k": k, "w1": w1, "w2": w2, "diversity": diversity, **more}
        answer = self.api.recommend(body)
        assert answer.status == 200, (answer.status, answer.body)
        return [f"{r['song']}{SEP}{r['artist']}" for r in answer.body["recommendations"]]

    def segue(self, start: str, end: str | None, length: int) -> dict:
        """The API's answer to the segue the UI asks for ``title — artist`` choices."""
        body: dict = {"from": dict(zip(("song", "artist"), start.rsplit(SEP, 1))), "length": length}
        if end:
            body["to"] = dict(zip(("song", "artist"), end.rsplit(SEP, 1)))
        answer = self.api.segue(body)
        assert answer.status == 200, (answer.status, answer.body)
        return answer.body

    def typeable_songs(self, n: int = 1) -> list[tuple[str, str]]:
        """The first ``n`` catalog songs with listeners (their default ranking is not the
        content-only one), each with a prefix of its title whose autocomplete lists it:
        ``[(prefix, "title — artist")]``."""
        found = self.chosen.setdefault("typeable", [])  # (row, prefix, choice), searched once
        for row in range(found[-1][0] + 1 if found else 3, 200):
            if len(found) >= n:
                break
            title, artist = self.song(row)
            prefix = title[: max(4, (len(title) * 2) // 3)].rstrip()
            listed = self.api.search(prefix)
            if (
                len(prefix) >= 4
                and isinstance(listed.body, list)
                and any(s["song"] == title and s["artist"] == artist for s in listed.body)
                and (self.recommend(title, artist) != self.recommend(title, artist, w1=1.0, w2=0.0))
            ):
                found.append((row, prefix, f"{title}{SEP}{artist}"))
        assert len(found) >= n, f"fewer than {n} catalog songs are found by a prefix of their title"
        return [(prefix, choice) for _, prefix, choice in found[:n]]

    def misspelt_song(self) -> tuple[str, str]:
        """A misspelling of a catalog title the API does not resolve but suggests: (typed, choice)."""
        if "misspelt" not in self.chosen:
            for row in range(3, 400):
                title, artist = self.song(row)
                if len(title) < 14:
                    continue
                typed = title[:-3] + "zqx"
                answer = self.api.recommend({"song": typed, "k": 10})
                options = answer.body.get("suggestions", []) if isinstance(answer.body, dict) else []
                if answer.status == 404 and any(s["song"] == title and s["artist"] == artist for s in options):
                    self.chosen["misspelt"] = typed, f"{title}{SEP}{artist}"
                    break
            else:
                raise AssertionError("no misspelt title gets a 404 with its song among the suggestions")
        return self.chosen["misspelt"]


@pytest.fixture(scope="module")
def ui_stack(demo_bundle, tmp_path_factory):
    """API (with an event log for feedback) + UI on free loopback ports; both stopped at teardown."""
    service = Service.from_bundle(bundle.load(str(demo_bundle)))
    events = str(tmp_path_factory.mktemp("ui-events"))
    api_server = ApiServer(create_app(LocalBackend(service, EventLog(events, "ui-test"))), free_port())
    api_server.start()
    ui_api, direct, ui = Api(api_server.url), Api(api_server.url), None
    try:
        ui = build(ui_api)
        ui.launch(
            server_name="127.0.0.1",
            server_port=free_port(),
            prevent_thread_lock=True,
            quiet=True,
            show_error=False,
            ssr_mode=False,
            **launch_options(),
        )  # as `python -m ui.app` does
        yield UiStack(service, api_server, direct, ui, ui.local_url.rstrip("/"), events)
    finally:
        if ui is not None:
            ui.close(verbose=False)
        api_server.stop()
        ui_api.client.close()
        direct.client.close()


@pytest.fixture(scope="module")
def browser(request):
    """Headless system Chromium (skips when none is installed), warmed up on the UI once."""
    executable = find_chromium()
    if executable is None:
        given = os.environ.get("SEGUE_CHROMIUM")
        pytest.skip(
            f"no Chromium executable at SEGUE_CHROMIUM={given!r}"
            if given
            else "no Chromium executable found (`make test` installs Debian's chromium with apt; "
            "or set SEGUE_CHROMIUM to one)"
        )
    ui_stack = request.getfixturevalue("ui_stack")  # only once a browser is there to use it
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--no-first-run"],
        )
        try:
            page = _new_page(browser)
            SeguePage(page, ui_stack.ui_url).open(timeout=60_000)  # the first Gradio load is slow
            page.context.close()
            yield browser
        finally:
            browser.close()


def _new_page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    context.route(LOOPBACK_ONLY, lambda route: route.abort())
    return context.new_page()


@pytest.fixture
def ui_page(browser, ui_stack, request):
    """A fresh page (own context) on the UI; its screenshot goes to reports/screenshots/<test>.png."""
    page = _new_page(browser)
    segue = SeguePage(page, ui_stack.ui_url)
    segue.open()
    yield segue
    segue.screenshot(SCREENSHOTS / f"{request.node.name}.png")
    page.context.close()


def located(find: Callable[[Page], Locator]) -> property:
    """A page element as a read-only attribute, found afresh on each use."""
    return property(lambda self: find(self.page))


class SeguePage:
    """The Segue page as a person uses it: by roles, labels and the ``segue-*`` element ids."""

    def __init__(self, page: Page, url: str) -> None:
        self.page, self.url = page, url

    def open(self, timeout: float = TIMEOUT_MS) -> SeguePage:
        self.page.goto(self.url, wait_until="domcontentloaded", timeout=timeout)
        expect(self.song_box).to_be_editable(timeout=timeout)
        expect(self.recommend_button).to_be_enabled(timeout=timeout)
        return self

    # what is on the page
    song_box = located(lambda page: page.get_by_role("combobox", name="Song", exact=True))
    artist_box = located(lambda page: page.get_by_role("textbox", name="Artist (optional)"))
    recommend_button = located(lambda page: page.get_by_role("button", name="Recommend", exact=True))
    message = located(lambda page: page.locator("#segue-message"))
    weights_line = located(lambda page: page.locator("#segue-weights"))
    suggestions = located(lambda page: page.locator("#segue-suggestions"))
    results = located(lambda page: page.locator("#segue-results").get_by_role("table", name="Recommended songs"))
    from_box = located(lambda page: page.get_by_role("combobox", name="From", exact=True))
    to_box = located(lambda page: page.get_by_role("combobox", name="To (optional)", exact=True))
    segue_button = located(lambda page: page.get_by_role("button", name="Make the segue", exact=True))
    segue_message = located(lambda page: page.locator("#segue-path-message"))
    segue_summary = located(lambda page: page.locator("#segue-path-summary"))
    segue_suggestions = located(lambda page: page.locator("#segue-path-suggestions"))
    segue_path = located(lambda page: page.locator("#segue-path").get_by_role("table", name="Segue path"))
    toasts = located(lambda page: page.get_by_test_id("toast-body"))

    @property
    def result_rows(self) -> Locator:
        return self.results.locator("tbody tr")

    @property
    def segue_rows(self) -> Locator:
        return self.segue_path.locator("tbody tr")

    def option(self, choice: str) -> Locator:
        """One entry of the song box's autocomplete list."""
        return self.page.get_by_role("option", name=choice, exact=True)

    def suggestion(self, choice: str, group: Locator | None = None) -> Locator:
        """One "did you mean" choice (of the Recommend tab's, or of ``group``)."""
        return (self.suggestions if group is None else group).get_by_role("radio", name=choice, exact=True)

    def rating_button(self, row: int, signal: str) -> Locator:
        """The thumbs-up (``"like"``) or thumbs-down (``"dislike"``) button of result ``row`` (1-based)."""
        return self.result_rows.nth(row - 1).locator(f'button[data-signal="{signal}"]')

    def slider(self, label: str) -> Locator:
        """The range input of the slider whose label starts with ``label``."""
        return self.page.get_by_role("slider", name=f"range slider for {label}")

    def slider_number(self, label: str) -> Locator:
        return self.page.get_by_role("spinbutton", name=f"number input for {label}")

    def type_number(self, label: str, value: float) -> None:
        """Type ``value`` into a slider's number box key by key, over what it held, as a person
        does. (Playwright's ``fill`` sets the text at once; with two boxes filled that way in a
        row, Gradio 6.31 sometimes sends the first box's old value with the next event.)"""
        box = self.slider_number(label)
        box.click()
        box.press("Control+A")
        box.press_sequentially(f"{value:g}", delay=40)

    def result_songs(self, rows: Locator | None = None) -> list[str]:
        """``title — artist`` of each row of the results (or of ``rows``), top first."""
        rows = self.result_rows if rows is None else rows
        songs = rows.locator("td:nth-child(2)").all_inner_texts()
        artists = rows.locator("td:nth-child(3)").all_inner_texts()
        return [f"{s.strip()}{SEP}{a.strip()}" for s, a in zip(songs, artists)]

    def expect_results(self, songs: list[str]) -> None:
        """Wait until the table lists exactly ``songs`` (``title — artist``), in order."""
        expect(self.result_rows.locator("td:nth-child(2)")).to_have_text([s.rpartition(SEP)[0] for s in songs])
        assert self.result_songs() == songs

    # what a person does
    def open_tab(self, name: str) -> None:
        """Switch to the ``Recommend`` or the ``Segue`` tab."""
        self.page.get_by_role("tab", name=name, exact=True).click()

    def open_filters(self) -> None:
        """Open the main tab's closed filters accordion."""
        self.page.get_by_role("button", name=re.compile(r"^Filters")).click()

    def type_song(self, text: str, box: Locator | None = None) -> None:
        """Type into a song box (the main tab's by default) key by key (each key-up asks the API
        for autocomplete choices)."""
        box = self.song_box if box is None else box
        box.click()
        box.press_sequentially(text, delay=40)

    def settled_options(self, quiet_ms: int = 500) -> None:
        """Wait until the open autocomplete list has not changed for ``quiet_ms``: each key-up's
        answer replaces it, reusing its entries, so a click meanwhile can land on another song."""
        options, last = self.page.get_by_role("option"), None
        for _ in range(TIMEOUT_MS // quiet_ms):
            now = options.all_inner_texts()
            if now and now == last:
                return
            last = now
            self.page.wait_for_timeout(quiet_ms)
        raise AssertionError(f"the autocomplete list kept changing: {last}")

    def pick_song(self, choice: str, box: Locator | None = None) -> None:
        """Pick ``title — artist`` from the autocomplete list of a song box (the main tab's by
        default, which then asks for recommendations)."""
        expect(self.option(choice)).to_be_visible()
        self.settled_options()
        self.option(choice).click()
        expect(self.song_box if box is None else box).to_have_value(choice)

    def recommend(self) -> None:
        self.recommend_button.click()

    def drag_slider(self, label: str, to: str) -> None:
        """Drag a slider's handle to its ``"max"`` or ``"min"`` end with the mouse and let go;
        the UI re-queries on release."""
        self.slider(label).scroll_into_view_if_needed()
        box = self.slider(label).bounding_box()
        value = float(self.slider(label).input_value())
        low, high = float(self.slider(label).get_attribute("min")), float(self.slider(label).get_attribute("max"))
        y = box["y"] + box["height"] / 2
        start = box["x"] + 8 + (box["width"] - 16) * (value - low) / ((high - low) or 1)
        end = box["x"] + (box["width"] - 2 if to == "max" else 2)
        self.page.mouse.move(start, y)
        self.page.mouse.down()
        self.page.mouse.move(end, y, steps=8)
        self.page.mouse.up()
        expect(self.slider(label)).to_have_value(self.slider(label).get_attribute(to))

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
