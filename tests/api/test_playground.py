"""The playground page at ``GET /``: served, self-contained, and calling what the server offers.

The page's JavaScript is checked against the real server it is served by: every task type it
sends is one the server runs, every field it reads from a reply is one the server sends, and
every element id it looks up is in the page.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelserve_testing import (
    ServerFactory,
    ServerProcess,
    data_uri,
    make_png,
    poll_results,
    runware,
)

WEB_DIR = Path(str(resources.files("reelserve.web")))
HARNESS = Path(__file__).resolve().parent / "playground_harness.mjs"


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


def test_page_references_only_same_origin_resources(client: httpx.Client) -> None:
    _, page = _page(client)
    assert sorted(page.refs) == ["/playground/app.css", "/playground/app.js"]
    types = {"/playground/app.css": "text/css", "/playground/app.js": "text/javascript"}
    for ref in page.refs:
        assert ref.startswith("/") and not ref.startswith("//")
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

    # One endpoint, POST /v1, and the task types the server runs.
    assert re.findall(r"fetch\((\w+)", script) == ["ENDPOINT"]
    assert 'const ENDPOINT = "/v1";' in script
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


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@needs_node
def test_page_script_parses() -> None:
    done = subprocess.run(["node", "--check", str(WEB_DIR / "app.js")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def run_page(server: ServerProcess, tmp_path: Path, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Run app.js in Node on a minimal DOM of index.html (playground_harness.mjs) against
    ``server``; returns the page's final state."""
    scenario = tmp_path / f"scenario-{uuid.uuid4().hex[:8]}.json"
    scenario.write_text(json.dumps({
        "server": server.url, "index": str(WEB_DIR / "index.html"),
        "script": str(WEB_DIR / "app.js"), "steps": steps, "timeout_ms": 120_000}))
    done = subprocess.run(["node", str(HARNESS), str(scenario)], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    state: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return state


@needs_node
def test_page_generates_with_a_first_frame_and_shows_the_videos(
        server: ServerProcess, client: httpx.Client, tmp_path: Path) -> None:
    first = tmp_path / "first.png"
    first.write_bytes(make_png(720, 720, seed=4))
    state = run_page(server, tmp_path, [
        {"set": {"model": "klingai:1@1"}, "files": {"first-frame": str(first)}},
        {"set": {"prompt": "a paper boat drifting", "size": "720x720", "duration": "5",
                 "number-results": "2", "seed": "21"}},
        {"submit": "generate-form"},
    ])
    assert state["error"] is False and state["message"].startswith("done in ")
    assert state["progress"] == 100
    assert len(state["models"]) == 13
    assert state["durations"] == ["5", "10"] and "720x720" in state["sizes"]
    assert state["lastFrameHidden"] is True and state["firstFrameRequired"] is False
    captions = sorted(r["caption"] for r in state["results"])
    assert captions == ["seed 21 · 0.1848 USD · download", "seed 22 · 0.1848 USD · download"]
    for result in state["results"]:
        video = client.get(result["src"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


@needs_node
def test_page_shows_the_server_refusal(server: ServerProcess, tmp_path: Path) -> None:
    # klingai:2@1 is image-to-video only: the page marks the frame required; sent without
    # one anyway, the server's refusal is what the status line shows.
    state = run_page(server, tmp_path, [
        {"set": {"model": "klingai:2@1", "prompt": "a paper boat"}},
        {"submit": "generate-form"},
    ])
    assert state["firstFrameRequired"] is True
    assert state["error"] is True and state["results"] == []
    assert state["message"].startswith("unsupportedWorkflow: ")
    assert "(parameter: inputs.frameImages)" in state["message"]
    # klingai:6@0 takes its size from the first frame: the size field is hidden.
    assert run_page(server, tmp_path, [{"set": {"model": "klingai:6@0"}}])["sizeHidden"] is True


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


@needs_node
def test_page_asks_for_a_key_and_keeps_it(server_factory: ServerFactory) -> None:
    srv = server_factory(env={"REELSERVE_API_KEYS": "key-a", "REELSERVE_WORKERS": "0"})
    asked = run_page(srv, srv.data_dir, [])
    assert asked["keyPanelShown"] is True and asked["models"] == []
    assert asked["error"] is True and asked["message"].startswith("invalidApiKey: ")
    keyed = run_page(srv, srv.data_dir, [{"set": {"api-key": "key-a"}, "submit": "key-form"}])
    assert keyed["keyPanelShown"] is False and keyed["error"] is False
    assert len(keyed["models"]) == 13
