"""The published OpenAPI schema: complete (every HTTP route), derived from the catalog, rendered
at ``/docs``, and true: schemathesis drives a real server with it (bounded examples) and fails on
any 5xx, undocumented status, wrong content type, schema-violating answer, or a 405 whose
``Allow`` does not list exactly the methods the schema declares for the path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from reelserve.api.app import create_app
from reelserve.api.openapi import http_routes
from reelserve.catalog import get_catalog
from reelserve.settings import Settings
from reelserve_testing import ServerProcess

# No rendering (no worker threads) and no per-key limits: every generated submit reaches the
# validator and the store, instead of most of them stopping at 429.
SERVER_ENV = {
    "REELSERVE_WORKERS": "0",
    "REELSERVE_RATE_SUBMITS_PER_MINUTE": "0",
    "REELSERVE_RATE_MAX_IN_FLIGHT": "0",
    "REELSERVE_RATE_UPLOADS_PER_MINUTE": "0",
}
IMPLICIT = {"head", "options"}
EXAMPLES = 8  # per operation and mode: ~30 operations in well under a minute


@pytest.fixture(scope="module")
def openapi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("openapi"), SERVER_ENV).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def published(openapi_server: ServerProcess) -> dict[str, Any]:
    resp = httpx.get(f"{openapi_server.url}/openapi.json", timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_every_http_route_is_described(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), run_workers=False)
    paths = app.openapi()["paths"]
    hidden = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/", "/favicon.ico",
              "/playground/{name}", "/v1/"}  # docs, playground and the /v1/ alias of /v1
    missing = []
    for path, methods, _ in http_routes(app):
        if path in hidden:
            continue
        open_path = path.replace("{video_id:video_id}", "{video_id}")
        for method in methods - {"HEAD"}:
            operation = paths.get(open_path, {}).get(method.lower())
            if operation is None or "security" not in operation or "200" not in operation[
                    "responses"]:
                missing.append(f"{method} {open_path}")
    assert missing == []
    assert {"/v1", "/v1/videos", "/media/{kind}/{name}", "/metrics", "/ready", "/health",
            "/v1/tasks", "/v1/videos/text2video", "/klingai/m2v_img2video_hq"} <= set(paths)


def test_schema_describes_tasks_auth_and_websocket(published: dict[str, Any]) -> None:
    schemas = published["components"]["schemas"]
    catalog = get_catalog()
    task = schemas["RunwareTask"]
    types = set(task["discriminator"]["mapping"])
    assert {"videoInference", "getResponse", "imageUpload", "mediaStorage", "modelSearch",
            "getTaskDetails", "authentication", "ping"} == types
    video = schemas["RunwareTask_videoInference"]["properties"]
    # the limits are the catalog's
    assert video["model"]["enum"] == sorted(catalog.models)
    assert video["numberResults"]["maximum"] == catalog.limits.number_results.max
    assert video["positivePrompt"]["maxLength"] == catalog.limits.prompt.max_length
    assert video["CFGScale"]["minimum"] == catalog.limits.cfg_scale.min
    assert video["ttl"]["maximum"] == catalog.limits.ttl.max
    longest = max(d for m in catalog.models.values() for ds in m.durations.values() for d in ds)
    assert video["duration"]["maximum"] == longest
    body = published["paths"]["/v1"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["items"] == {"$ref": "#/components/schemas/RunwareTask"}
    schemes = published["components"]["securitySchemes"]
    assert schemes["klingJwt"]["bearerFormat"] == "JWT"
    assert published["paths"]["/v1/videos/text2video"]["post"]["security"] == [{"klingJwt": []}]
    assert published["paths"]["/v1/videos"]["post"]["security"] == [{"apiKey": []}]
    create = published["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(create)
    assert "input_reference[image_url]" in create["multipart/form-data"]["schema"]["properties"]
    assert "Retry-After" in published["paths"]["/v1"]["post"]["responses"]["429"]["headers"]
    assert "WebSocket" in published["info"]["description"]
    assert "connectionSessionUUID" in published["info"]["description"]


def test_docs_page_renders_the_schema(openapi_server: ServerProcess) -> None:
    resp = httpx.get(f"{openapi_server.url}/docs", timeout=30)
    assert resp.status_code == 200
    assert "swagger" in resp.text.lower() and "/openapi.json" in resp.text


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/videos", {"GET", "POST"}),  # was "Allow: POST" (first route's methods only)
    ("POST", "/v1/videos/video_x", {"GET", "DELETE"}),
    ("DELETE", "/v1/videos/text2video", {"GET", "POST"}),
    ("GET", "/v1/tasks/x/cancel", {"POST"}),
])
def test_405_allow_lists_every_method_of_the_path(
    openapi_server: ServerProcess, method: str, path: str, allowed: set[str]
) -> None:
    resp = httpx.request(method, f"{openapi_server.url}{path}", timeout=30)
    assert resp.status_code == 405
    got = {m.strip() for m in resp.headers["allow"].split(",")} - {"HEAD"}
    assert got == allowed


# ------------------------------------------------------------------------------- schemathesis


@schemathesis.check
def allow_matches_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 405 lists exactly the methods the schema declares for the path (HEAD/OPTIONS aside)."""
    if response.status_code != 405:
        return None
    declared = {m.lower() for m in case.operation.schema.raw_schema["paths"][case.path]
                if m.lower() in {"get", "post", "put", "patch", "delete"}}
    allow = {m.strip().lower() for m in response.headers.get("allow", [""])[0].split(",")
             if m.strip()} - IMPLICIT
    if allow != declared:
        raise AssertionError(f"405 on {case.path} says Allow: {sorted(allow)}, the schema "
                             f"declares {sorted(declared)}")
    return True


def test_schemathesis_finds_nothing(openapi_server: ServerProcess) -> None:
    # Every operation in turn, each with a bounded Hypothesis run (schemathesis' pytest plugin
    # needs a pytest API this pytest no longer has, so the strategies are driven directly).
    schema = schemathesis.openapi.from_url(f"{openapi_server.url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, unsupported_method, allow_matches_schema]

    def checks_for(label: str) -> list[Any]:
        # /ready's documented 503 is its answer here (no worker renders for this server), not
        # a server error; every other check still applies to it.
        return [c for c in checks if c is not not_a_server_error] if label == "GET /ready" \
            else checks

    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        modes = [GenerationMode.POSITIVE]
        if operation.body or any(True for _ in operation.iter_parameters()):
            modes.append(GenerationMode.NEGATIVE)  # invalid input must be a 4xx, never a 5xx
        for mode in modes:

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                case.call_and_validate(checks=checks_for(case.operation.label))

            try:
                run()
            except Exception as exc:  # collect every operation's failure, then report them all
                failures.append(f"{operation.label} ({mode}): {type(exc).__name__}: "
                                f"{exc!s:.1500}")
    assert operations >= 25
    assert failures == [], "\n\n".join(failures)
