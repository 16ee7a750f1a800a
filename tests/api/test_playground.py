"""The playground page at ``GET /``: served, self-contained, and calling what the server offers.

The page's JavaScript is checked against the real server it is served by: every task type it
sends is one the server runs, every field it reads from a reply is one the server sends, and
every element id it looks up is in the page. Then the page runs in a real headless Chromium
(Debian's ``chromium`` driven by playwright, see ``playground_browser.py``): generate, watch progress,
cancel, play, history after a reload, the key prompt and the server's refusals. Screenshots are
kept under ``REELSERVE_TEST_ARTIFACTS`` (or a pytest temporary directory).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import httpx
import pytest
from playground_browser import Browser, open_browser

from reelserve.catalog import get_catalog
from reelserve_testing import (
    ServerFactory,
    ServerProcess,
    data_uri,
    make_png,
    poll_results,
    runware,
)

WEB_DIR = Path(str(resources.files("reelserve.web")))


class _Page(HTMLParser):
    """Collects resource references, ids, inline code and event-handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()
        self.inline_code: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "action", "poster", "data"):
            if values.get(name):
                self.refs.append(str(values[name]))
        if values.get("id"):
            self.ids.add(str(values["id"]))
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "style" or "style" in values:
            self.inline_code.append(f"<{tag} style>")
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_code.append(data)


def _page(http: httpx.Client) -> tuple[httpx.Response, _Page]:
    resp = http.get("/")
    parser = _Page()
    parser.feed(resp.text)
    return resp, parser


def test_page_is_served_with_a_strict_policy(client: httpx.Client) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    for rule in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                 "connect-src 'self'"):
        assert rule in csp
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert "<title>reelserve playground</title>" in resp.text
    # The routes that were there before are untouched.
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/playground/nope.js").status_code == 404
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file


def test_page_references_only_same_origin_resources(client: httpx.Client) -> None:
    _, page = _page(client)
    assert sorted(page.refs) == ["/docs", "/favicon.ico", "/playground/app.css",
                                 "/playground/app.js"]
    types = {"/playground/app.css": "text/css", "/playground/app.js": "text/javascript",
             "/favicon.ico": "image/x-icon"}
    for ref in page.refs:
        assert ref.startswith("/") and not ref.startswith("//")
        if ref not in types:
            continue  # /docs: a same-origin link, not a resource the page loads
        asset = client.get(ref)
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(types[ref])
    # No inline code (the policy would block it) and no other origin anywhere in the files.
    assert page.inline_code == [] and page.handlers == []
    for name in ("index.html", "app.js", "app.css"):
        text = (WEB_DIR / name).read_text()
        assert re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE) is None, name
        assert "url(" not in text and "@import" not in text


def test_page_script_calls_endpoints_and_fields_that_exist(client: httpx.Client) -> None:
    _, page = _page(client)
    script = client.get("/playground/app.js").text

    # Every element the script looks up is in the page.
    looked_up = set(re.findall(r'\$\("([\w-]+)"\)', script))
    assert looked_up and looked_up <= page.ids, looked_up - page.ids

    # Two endpoints, POST /v1 and the task API, and the task types the server runs.
    assert re.findall(r"fetch\((\w+)", script) == ["ENDPOINT", "TASKS_ENDPOINT"]
    assert 'const ENDPOINT = "/v1";' in script
    assert 'const TASKS_ENDPOINT = "/v1/tasks";' in script
    task_types = set(re.findall(r'taskType: "(\w+)"', script))
    assert task_types == {"modelSearch", "imageUpload", "videoInference", "getResponse",
                          "getTaskDetails"}

    # Run what the page sends, as the page builds it, and keep every item the server returns.
    models = runware(client, [{"taskType": "modelSearch", "taskUUID": str(uuid.uuid4()),
                               "limit": 100, "offset": 0}]).json()["data"][0]["results"]
    upload = runware(client, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                               "image": data_uri(make_png(720, 720))}]).json()["data"][0]
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "deliveryMethod": "async", "includeCost": True, "numberResults": 1,
            "outputFormat": "MP4", "duration": 5, "width": 720, "height": 720,
            "positivePrompt": "a paper boat",
            "inputs": {"frameImages": [{"image": upload["imageUUID"], "frame": "first"}]}}
    ack = runware(client, [task])
    assert ack.status_code == 200 and "errors" not in ack.json()
    results, errors = poll_results(client, task["taskUUID"])
    assert errors == [] and len(results) == 1
    details = runware(client, [{"taskType": "getTaskDetails",
                                "taskUUID": task["taskUUID"]}]).json()["data"][0]
    assert client.get(results[0]["videoURL"]).status_code == 200

    # Fields the script reads exist in what the server sent.
    model_fields = set(re.findall(r"\bmodel\.(\w+)", script))
    assert model_fields and all(model_fields <= set(m) for m in models), model_fields
    assert set(re.findall(r"\bm\.(\w+)", script)) <= set(models[0])
    price_fields = set(re.findall(r"\bmodel\.price\.(\w+)", script))
    assert price_fields <= set(models[0]["price"])
    item_fields = set(re.findall(r"\bitem\.(\w+)", script))
    item_fields -= {"results"}  # modelSearch's item, checked below
    processing = {"status", "progress"}
    assert item_fields <= set(results[0]) | processing | {"imageUUID"}, item_fields
    assert "imageUUID" in upload and "results" in runware(client, [{
        "taskType": "modelSearch", "taskUUID": str(uuid.uuid4())}]).json()["data"][0]
    detail_fields = set(re.findall(r"\bdetails\.(\w+)", script))
    assert detail_fields <= set(details), detail_fields

    # The history reads task objects of /v1/tasks and their results.
    listed = client.get("/v1/tasks", params={"limit": 1}).json()
    entry, = listed["data"]
    entry_fields = set(re.findall(r"\bentry\.(\w+)", script))
    assert entry_fields and entry_fields <= set(entry), entry_fields - set(entry)
    assert set(re.findall(r"\bpage\.(\w+)", script)) <= set(listed)
    result_fields = set(re.findall(r"\bresult\.(\w+)", script))
    assert result_fields and result_fields <= set(entry["results"][0]), result_fields
    assert set(re.findall(r"\bentry\.error\.(\w+)", script)) <= {"code", "message", "parameter"}

    # The camera choices are the catalog's.
    camera = get_catalog().camera
    assert f"const CAMERA_TYPES = {json.dumps(camera.types)};" in script
    assert f"const CAMERA_AXES = {json.dumps(camera.axes)};" in script


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@needs_node
def test_page_script_parses() -> None:
    done = subprocess.run(["node", "--check", str(WEB_DIR / "app.js")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium for the module (skipped, or failed on CI, without one)."""
    with open_browser(tmp_path_factory.mktemp("screenshots")) as opened:
        yield opened


def test_browser_generates_with_camera_and_cfg_and_plays(
        server: ServerProcess, client: httpx.Client, browser: Browser, tmp_path: Path) -> None:
    first = tmp_path / "first.png"
    first.write_bytes(make_png(720, 720, seed=4))
    page = browser.page(server.url)
    browser.wait(page, "document.querySelectorAll('#model option').length > 0")
    assert page.locator("#model option").count() == 13
    assert "klingai" not in (page.get_attribute("#prompt", "placeholder") or "")
    page.select_option("#model", "klingai:1@1")
    page.set_input_files("#first-frame", str(first))
    # The chosen frame is previewed before anything is uploaded.
    browser.wait(page, "document.getElementById('first-preview').naturalWidth === 720")
    assert page.locator("#last-frame-field").is_hidden()
    assert [o for o in page.locator("#duration option").all_inner_texts()] == ["5", "10"]
    page.fill("#prompt", "a paper boat drifting")
    page.select_option("#size", "720x720")
    page.select_option("#number-results", "2")
    page.fill("#seed", "21")
    page.fill("#cfg-scale", "0.6")
    page.select_option("#camera-type", "simple")
    page.select_option("#camera-axis", "zoom")
    page.fill("#camera-value", "4")
    page.click("#submit")
    # Progress is shown while it renders, and the task is in the history at once.
    page.wait_for_selector("#progress:not([hidden])")
    page.wait_for_selector("#history li")
    browser.screenshot(page, "generating")
    browser.wait(page, "document.getElementById('message').textContent.startsWith('done in')",
                           timeout=120)
    assert page.eval_on_selector("#progress", "p => p.value") == 100
    captions = sorted(page.locator("#results figcaption").all_inner_texts())
    assert captions == ["seed 21 · 0.1848 USD · download", "seed 22 · 0.1848 USD · download"]
    # The videos really play in the browser (H.264 decoded, time advances).
    browser.wait(page,
        "[...document.querySelectorAll('#results video')].every(v => v.currentTime > 0.2)")
    browser.screenshot(page, "done")
    for src in page.eval_on_selector_all("#results video", "vs => vs.map(v => v.src)"):
        video = client.get(src)
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    # What the page sent: camera control and CFG as the Runware protocol names them.
    task_uuid = page.get_attribute("#history li", "data-task-uuid")
    details = runware(client, [{"taskType": "getTaskDetails",
                                "taskUUID": task_uuid}]).json()["data"][0]
    assert details["request"]["CFGScale"] == 0.6
    assert details["request"]["providerSettings"] == {"klingai": {"cameraControl": {
        "type": "simple", "config": {"zoom": 4}}}}
    assert page.inner_text("#history li .task-status") == "succeeded"
    # Changing the model clears the result of the previous one.
    page.select_option("#model", "klingai:1@2")
    assert page.locator("#results figure").count() == 0 and page.inner_text("#message") == ""
    assert browser.errors == [], browser.errors


def test_browser_cancel_history_after_reload_and_play(
        server_factory: ServerFactory, browser: Browser) -> None:
    srv = server_factory(env={"REELSERVE_WORKERS": "1"})
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        # A long render holds the only worker (submitted by another client, any dialect).
        long = http.post("/v1/videos", json={"model": "klingai:5@3", "prompt": "slow sunset",
                                             "seconds": "10", "size": "1920x1080"}).json()
        page = browser.page(srv.url)
        browser.wait(page, "document.querySelectorAll('#model option').length > 0")
        page.wait_for_selector("#history li .task-progress")
        # The page's own task waits behind it; cancel it from the status area.
        page.select_option("#model", "klingai:1@1")
        page.fill("#prompt", "a queued kite")
        page.select_option("#size", "720x720")
        page.click("#submit")
        page.wait_for_selector("#cancel-current:not([hidden])")
        browser.wait(page, "document.querySelectorAll('#history li').length === 2")
        browser.screenshot(page, "queued")
        page.click("#cancel-current")
        browser.wait(page,
            "document.getElementById('message').textContent.includes('ancel')", timeout=30)
        assert "error" in (page.get_attribute("#message", "class") or "")
        # Cancel the long one from the history: it stops within a step.
        browser.wait(page, "document.querySelectorAll('#history .task-cancel').length === 1")
        page.click("#history .task-cancel")
        browser.wait(page,
            "[...document.querySelectorAll('#history .task-status')]"
            ".every(s => s.textContent === 'cancelled')", timeout=30)
        statuses = http.get("/v1/tasks").json()["data"]
        assert [t["status"] for t in statuses] == ["cancelled", "cancelled"]
        assert statuses[1]["id"] == long["id"]

        # A finished task, then a reload: the history is still there, and plays.
        ok = http.post("/v1/videos", json={"prompt": "a lamp", "size": "720x720"}).json()
        deadline = 60.0
        while http.get(f"/v1/tasks/{ok['id']}").json()["status"] != "succeeded" and deadline > 0:
            page.wait_for_timeout(200)
            deadline -= 0.2
        page.reload()
        # The cached history shows before the server answers; then the server's list.
        browser.wait(page, "document.querySelectorAll('#history li').length === 3")
        cached = page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('reelserve.history'))")
        assert len(cached) == 1
        assert page.inner_text("#history li .task-status") == "succeeded"
        page.click("#history li .task-play")
        browser.wait(page,
            "(() => { const v = document.querySelector('#results video');"
            " return v && v.currentTime > 0.2; })()")
        href = page.get_attribute("#history li .task-download", "href") or ""
        assert http.get(href).headers["content-type"] == "video/mp4"
        browser.screenshot(page, "history-after-reload")
    # The only refusal: getResponse of the cancelled task (its taskCancelled error, shown above).
    assert set(browser.errors) <= {f"HTTP 400 POST {srv.url}/v1"}, browser.errors


def test_browser_shows_the_server_refusal(server: ServerProcess, browser: Browser) -> None:
    # klingai:2@1 is image-to-video only: the page marks the frame required; sent without
    # one anyway (the submit event bypasses the browser's own form check), the server's refusal
    # is what the status line shows.
    page = browser.page(server.url)
    browser.wait(page, "document.querySelectorAll('#model option').length > 0")
    page.select_option("#model", "klingai:2@1")
    page.fill("#prompt", "a paper boat")
    assert page.eval_on_selector("#first-frame", "el => el.required") is True
    page.eval_on_selector("#generate-form",
                          "f => f.dispatchEvent(new Event('submit', {cancelable: true}))")
    browser.wait(page, "document.getElementById('message').classList.contains('error')")
    message = page.inner_text("#message")
    assert message.startswith("unsupportedWorkflow: ")
    assert "(parameter: inputs.frameImages)" in message
    assert page.locator("#results figure").count() == 0
    # klingai:6@0 takes its size from the first frame: the size field is hidden.
    page.select_option("#model", "klingai:6@0")
    assert page.locator("#size-field").is_hidden()
    browser.screenshot(page, "refusal")


def test_with_api_keys_the_page_loads_and_the_api_asks_for_a_key(
        server_factory: ServerFactory) -> None:
    srv: ServerProcess = server_factory(env={"REELSERVE_API_KEYS": "key-a",
                                             "REELSERVE_WORKERS": "0"})
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        assert http.get("/").status_code == 200
        assert http.get("/playground/app.js").status_code == 200
        # The page's first call without a key: a 401 with invalidApiKey makes it ask for one.
        search = [{"taskType": "modelSearch", "taskUUID": str(uuid.uuid4())}]
        refused = runware(http, search)
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["code"] == "invalidApiKey"
        assert runware(http, search, headers={"Authorization": "Bearer key-a"}).status_code == 200


def test_browser_asks_for_a_key_and_keeps_it(server_factory: ServerFactory,
                                             browser: Browser) -> None:
    srv = server_factory(env={"REELSERVE_API_KEYS": "key-a", "REELSERVE_WORKERS": "0"})
    page = browser.page(srv.url, expect_errors=True)  # the first calls answer 401
    page.wait_for_selector("#key-panel:not([hidden])")
    browser.wait(page, "document.getElementById('message').classList.contains('error')")
    assert page.inner_text("#message").startswith("invalidApiKey: ")
    assert page.locator("#model option").count() == 0
    page.fill("#api-key", "key-a")
    page.click("#key-form button[type=submit]")
    browser.wait(page, "document.querySelectorAll('#model option').length === 13")
    assert page.locator("#key-panel").is_hidden()
    assert "error" not in (page.get_attribute("#message", "class") or "")
    browser.screenshot(page, "key-accepted")
