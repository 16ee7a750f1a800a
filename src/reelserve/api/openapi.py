"""The published API description: ``/openapi.json`` (rendered at ``/docs``) and the ``Allow``
header of 405 answers.

The routers read raw requests (each dialect parses its own wire shape in ``schema.py``), so
FastAPI's generated schema knows their paths but not their bodies. :func:`install_openapi`
replaces ``app.openapi`` with :func:`build_schema`: FastAPI's paths (summaries, tags, path
parameters) overlaid with what each operation takes and answers (``_operations``), and
the routes FastAPI hides (``POST /v1``, media URLs). Limits come from the catalog
(``catalog/models.toml``: models, sizes, durations, fps, prompt, CFG, results, quality, ttl,
seed), never copied by hand, so the schema follows the catalog. A test
(tests/api/test_openapi.py) fails on an HTTP route missing here and runs schemathesis
against a real server with this schema.

Starlette answers a method a path does not take with the ``Allow`` of the *first* route whose
path matched; several routes share a path here (``GET``/``POST /v1/videos``), so
:func:`method_not_allowed` recomputes it from every route.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import reelserve

__all__ = ["allowed_methods", "build_schema", "http_routes", "install_openapi",
           "method_not_allowed"]

WEBSOCKET_PROTOCOL = """\
## WebSocket (Runware dialect)

Connect to `ws(s)://HOST/v1` (or `/v1/`). Every frame is a JSON **array of task objects**, the
same tasks `POST /v1` takes (`RunwareTask`). The **first frame must be an `authentication`
task**, `[{"taskType": "authentication", "apiKey": "<key>"}]`, even on a server without keys
(any key is accepted there); the answer `{"data": [{"taskType": "authentication",
"connectionSessionUUID": ...}]}` names a session that a client reconnecting within
`REELSERVE_WS_RESUME_SECONDS` (120 s) resumes, receiving the results it missed. Tasks sent
before it get `missingApiKey`.

`videoInference` with `deliveryMethod: "sync"` **pushes** results: progress items
(`status: "processing"`, at most one a second), then each video as soon as it exists, or an
`{"errors": [...]}` frame naming the `taskUUID`. With `"async"` (the default) the socket answers
an ACK and the client polls `getResponse` over the same socket, as over REST. `imageUpload`,
`mediaStorage`, `modelSearch`, `getTaskDetails` and `ping` work as over REST. A socket without a
client frame for `REELSERVE_WS_IDLE_TIMEOUT` (120 s) is closed: send
`[{"taskType": "ping", "ping": true}]` to keep it open. Close code 1013 (try again later): the
server has too many sockets open, or the client reads too slowly (resume with the session).
"""

DESCRIPTION = f"""\
Self-hosted video generation speaking four wire dialects over one job store:

* **Runware**: `POST /v1` with a JSON array of tasks (discriminated by `taskType`), and the
  same tasks over a WebSocket at `/v1`.
* **OpenAI-style Videos**: `/v1/videos` (JSON or multipart; `input_reference` as a file, a URL
  string, or `{{"image_url": ...}}`).
* **Kling**: `/v1/videos/text2video`, `/v1/videos/image2video` with a Kling JWT.
* **302-style**: multipart `/klingai/m2v_*` and `/klingai/task/{{task_id}}/fetch`.

`/v1/tasks` lists, shows and cancels a key's tasks of every dialect. Results are served at
signed, expiring `/media/...` URLs. `/health`, `/ready` and `/metrics` are for operators.
Every answer carries `X-Request-ID` (a client's own is echoed). A `429` carries `Retry-After`.

{WEBSOCKET_PROTOCOL}"""

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {"type": "http", "scheme": "bearer",
               "description": "One of the server's API keys (REELSERVE_API_KEYS). A server "
                              "without keys serves loopback clients only, with no header."},
    "klingJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                 "description": "Kling auth: an HS256 JWT signed with a secret key, `iss` = the "
                                "access key, `exp` required, `nbf` checked (REELSERVE_KLING_KEYS)."},
}
API_KEY: list[dict[str, list[str]]] = [{"apiKey": []}]
KLING_JWT: list[dict[str, list[str]]] = [{"klingJwt": []}]
NO_AUTH: list[dict[str, list[str]]] = []

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _obj(properties: dict[str, Any], required: Iterable[str] = (), **extra: Any) -> dict[str, Any]:
    """An object schema; unknown keys allowed (answers grow, requests report them)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


_NULL_STR = {"type": ["string", "null"]}
_NULL_INT = {"type": ["integer", "null"]}
_NULL_NUM = {"type": ["number", "null"]}


# ================================================================================================
# Components: error envelopes, answers, and the Runware tasks derived from the catalog
# ================================================================================================


def _error_schemas() -> dict[str, Any]:
    runware_error = _obj({
        "code": {"type": "string"}, "message": {"type": "string"},
        "parameter": _NULL_STR, "taskType": _NULL_STR, "taskUUID": _NULL_STR,
        "allowedValues": {"type": ["array", "null"]},
    }, ["code", "message"])
    return {
        "RunwareError": runware_error,
        "RunwareErrors": _obj({"data": {"type": "array"},
                               "errors": {"type": "array", "items": _ref("RunwareError")}},
                              ["errors"]),
        "OpenAIError": _obj({"error": _obj({
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": _NULL_STR, "code": _NULL_STR}, ["message", "type"])}, ["error"]),
        "KlingError": _obj({"code": {"type": "integer"}, "message": {"type": "string"},
                            "request_id": {"type": "string"}, "data": {"type": "null"}},
                           ["code", "message"]),
        "M2vError": _obj({"result": {"type": "integer"}, "status": {"type": "integer"},
                          "message": {"type": "string"}, "code": {"type": "string"},
                          "data": {"type": "null"}}, ["result", "message"]),
        "Detail": _obj({"detail": {}}, ["detail"]),
        "MediaError": _obj({"error": {"type": "string"}}, ["error"]),
    }


def _answer_schemas() -> dict[str, Any]:
    video = _obj({
        "id": {"type": "string"}, "object": {"const": "video"}, "model": {"type": "string"},
        "status": {"enum": ["queued", "in_progress", "completed", "failed"]},
        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "created_at": {"type": "integer"}, "completed_at": _NULL_INT,
        "expires_at": _NULL_INT, "seconds": _NULL_STR, "size": _NULL_STR, "prompt": _NULL_STR,
        "error": {"oneOf": [{"type": "null"}, _obj({"code": {"type": "string"},
                                                    "message": {"type": "string"}})]},
    }, ["id", "object", "status", "progress", "created_at"])
    task = _obj({
        "taskUUID": {"type": "string"}, "id": {"type": "string"},
        "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled",
                            "cancelling"]},
        "progress": {"type": "integer"}, "model": {"type": "string"},
        "workflow": {"type": "string"}, "origin": {"type": "string"},
        "queuePosition": {"type": "integer", "minimum": 0,
                          "description": "queued tasks only: queued jobs ahead of it"},
        "createdAt": {"type": "string"}, "updatedAt": {"type": "string"},
        "results": {"type": "array", "items": _obj({"videoUUID": {"type": "string"},
                                                    "url": {"type": "string"}})},
        "error": {"oneOf": [{"type": "null"}, _obj({"code": {"type": "string"}})]},
    }, ["taskUUID", "id", "status", "progress", "origin", "results"])
    kling_task = _obj({"task_id": {"type": "string"}, "task_status": {"type": "string"},
                       "task_status_msg": {"type": "string"}})
    return {
        "Video": video,
        "VideoList": _obj({"object": {"const": "list"}, "data": {"type": "array",
                                                                 "items": _ref("Video")},
                           "first_id": _NULL_STR, "last_id": _NULL_STR,
                           "has_more": {"type": "boolean"}}, ["object", "data", "has_more"]),
        "VideoDeleted": _obj({"id": {"type": "string"}, "object": {"const": "video.deleted"},
                              "deleted": {"type": "boolean"}}, ["id", "object", "deleted"]),
        "Task": task,
        "TaskList": _obj({"data": {"type": "array", "items": _ref("Task")},
                          "nextCursor": _NULL_STR}, ["data", "nextCursor"]),
        "KlingTask": kling_task,
        "KlingAnswer": _obj({"code": {"const": 0}, "message": {"type": "string"},
                             "request_id": {"type": "string"},
                             "data": {"oneOf": [kling_task, {"type": "array",
                                                             "items": kling_task}]}},
                            ["code", "data"]),
        "M2vAnswer": _obj({"status": {"type": "integer"}, "task": {"type": "object"},
                           "works": {"type": "array"}}),
        "RunwareAnswer": _obj({"data": {"type": "array", "items": {"type": "object"}},
                               "errors": {"type": "array", "items": _ref("RunwareError")}},
                              ["data"]),
    }


def _runware_tasks() -> dict[str, Any]:
    """Every Runware task type; ``videoInference``'s limits from the catalog."""
    from reelserve.catalog import get_catalog
    from reelserve.tasks import DeliveryMethod, OutputFormat, OutputType

    catalog = get_catalog()
    limits = catalog.limits
    models = sorted(catalog.models)
    sides = [int(n) for entry in catalog.models.values() for size in entry.sizes
             for n in size.lower().split("x")]
    if limits.images.min_side:
        sides.append(limits.images.min_side)
    durations = sorted({d for entry in catalog.models.values()
                        for values in entry.durations.values() for d in values})
    fps = sorted({f for entry in catalog.models.values() for f in entry.fps.values()})
    uuid_str = {"type": "string", "format": "uuid"}
    frame = {"oneOf": [{"type": "string"}, _obj({
        "image": {"type": "string", "description": "UUID, URL, data URI or base64"},
        "frame": {"description": "first, last, or a frame number"}})]}
    video_inference = _obj({
        "taskType": {"const": "videoInference"},
        "taskUUID": uuid_str,
        "model": {"enum": models, "description": "a catalog AIR id (GET modelSearch)"},
        "positivePrompt": {"type": "string", "minLength": limits.prompt.min_length,
                           "maxLength": limits.prompt.max_length},
        "negativePrompt": {"type": "string", "maxLength": limits.prompt.max_length},
        "width": {"type": "integer", "minimum": min(sides), "maximum": max(sides),
                  "description": "one of the model's sizes (catalog)"},
        "height": {"type": "integer", "minimum": min(sides), "maximum": max(sides)},
        "duration": {"type": "number", "minimum": durations[0], "maximum": durations[-1],
                     "description": f"seconds; the model's durations among {durations}"},
        "fps": {"enum": fps},
        "CFGScale": {"type": "number", "minimum": limits.cfg_scale.min,
                     "maximum": limits.cfg_scale.max},
        "seed": {"type": "integer", "minimum": limits.seed.min, "maximum": limits.seed.max},
        "numberResults": {"type": "integer", "minimum": limits.number_results.min,
                          "maximum": limits.number_results.max},
        "inputs": _obj({
            "frameImages": {"type": "array", "items": frame, "maxItems": 2},
            "referenceImages": {"type": "array", "items": {"type": "string"}},
            "referenceVideos": {"type": "array", "items": {"type": "string"}},
            "video": {"type": "string"}}),
        "providerSettings": _obj({"klingai": _obj({
            "sound": {"type": "boolean"}, "keepOriginalSound": {"type": "boolean"},
            "cameraControl": _obj({"type": {"enum": catalog.camera.types},
                                   "config": _obj({axis: {"type": "number",
                                                          "minimum": catalog.camera.min,
                                                          "maximum": catalog.camera.max}
                                                   for axis in catalog.camera.axes})})})}),
        "outputType": {"enum": [t.value for t in OutputType]},
        "outputFormat": {"enum": [f.value for f in OutputFormat]},
        "outputQuality": {"type": "integer", "minimum": limits.output_quality.min,
                          "maximum": limits.output_quality.max},
        "ttl": {"type": "integer", "minimum": limits.ttl.min, "maximum": limits.ttl.max},
        "deliveryMethod": {"enum": [m.value for m in DeliveryMethod]},
        "webhookURL": {"type": "string", "format": "uri"},
        "uploadEndpoint": {"type": "string", "format": "uri"},
        "includeCost": {"type": "boolean"},
        "safety": _obj({"checkContent": {"type": "boolean"},
                        "mode": {"enum": ["none", "fast", "full"]}}),
    }, ["taskType", "taskUUID", "model"])
    tasks: dict[str, Any] = {
        "videoInference": video_inference,
        "getResponse": _obj({"taskType": {"const": "getResponse"}, "taskUUID": uuid_str},
                            ["taskType", "taskUUID"]),
        "getTaskDetails": _obj({"taskType": {"const": "getTaskDetails"},
                                "taskUUID": uuid_str}, ["taskType", "taskUUID"]),
        "imageUpload": _obj({"taskType": {"const": "imageUpload"}, "taskUUID": uuid_str,
                             "image": {"type": "string",
                                       "description": "data URI, base64 or URL"}},
                            ["taskType", "taskUUID", "image"]),
        "mediaStorage": _obj({"taskType": {"const": "mediaStorage"}, "taskUUID": uuid_str,
                              "operation": {"enum": ["upload", "delete"]},
                              "media": {"type": "string"}, "mediaUUID": uuid_str},
                             ["taskType", "taskUUID"]),
        "modelSearch": _obj({"taskType": {"const": "modelSearch"}, "taskUUID": uuid_str,
                             "search": {"type": "string"},
                             "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                             "offset": {"type": "integer", "minimum": 0}}, ["taskType"]),
        "authentication": _obj({"taskType": {"const": "authentication"},
                                "apiKey": {"type": "string"},
                                "connectionSessionUUID": {"type": "string"}}, ["taskType"]),
        "ping": _obj({"taskType": {"const": "ping"}, "ping": {"type": "boolean"}},
                     ["taskType"]),
    }
    out = {f"RunwareTask_{name}": schema for name, schema in tasks.items()}
    out["RunwareTask"] = {
        "oneOf": [_ref(f"RunwareTask_{name}") for name in tasks],
        "discriminator": {"propertyName": "taskType",
                          "mapping": {name: _REF + f"RunwareTask_{name}" for name in tasks}},
    }
    return out


def _kling_body(kind: str) -> dict[str, Any]:
    from reelserve.api.kling.schema import MODELS, MODES

    props: dict[str, Any] = {
        "model_name": {"enum": list(MODELS)}, "mode": {"enum": list(MODES)},
        "prompt": {"type": "string"}, "negative_prompt": {"type": "string"},
        "cfg_scale": {"type": "number", "minimum": 0, "maximum": 1},
        "duration": {"enum": ["5", "10"]}, "aspect_ratio": {"enum": ["16:9", "9:16", "1:1"]},
        "camera_control": {"type": "object"}, "callback_url": {"type": "string", "format": "uri"},
        "external_task_id": {"type": "string"},
        "sound": {"enum": ["on", "off"], "description": "generate audio (refused at submit "
                  "when the engine of the model has none: unsupportedSound)"},
    }
    if kind == "image2video":
        props["image"] = {"type": "string", "description": "URL or base64"}
        props["image_tail"] = {"type": "string"}
    return _obj(props, ["image"] if kind == "image2video" else ["prompt"])


def _m2v_form(text_only: bool) -> dict[str, Any]:
    from reelserve.api.m2v.schema import ASPECT_RATIOS, CAMERA_TYPES

    props: dict[str, Any] = {
        "prompt": {"type": "string"}, "negative_prompt": {"type": "string"},
        "cfg": {"type": "string", "description": "a number from 0 to 1"},
        "aspect_ratio": {"enum": list(ASPECT_RATIOS)},
        "camera_type": {"enum": list(CAMERA_TYPES)}, "camera_value": {"type": "string"},
        "enable_audio": {"enum": ["true", "false"]},
    }
    if not text_only:
        props["input_image"] = {"type": "string", "format": "binary"}
        props["tail_image"] = {"type": "string", "format": "binary"}
    return _obj(props, ["prompt"] if text_only else ["input_image"])


def _openai_create() -> dict[str, Any]:
    props: dict[str, Any] = {
        "model": {"type": "string", "description": "a catalog AIR id (default klingai:1@1)"},
        "prompt": {"type": "string"}, "negative_prompt": {"type": "string"},
        "seconds": {"type": "string", "description": "e.g. \"5\""},
        "size": {"type": "string", "pattern": r"^\d+x\d+$"},
        "seed": {"type": "integer"},
    }
    url_ref = _obj({"image_url": {"type": "string"}}, ["image_url"])
    json_body = _obj({**props, "input_reference": {"oneOf": [{"type": "string"}, url_ref]}},
                     ["prompt"])
    form_body = _obj({**props, "input_reference": {"type": "string", "format": "binary"},
                      "input_reference[image_url]": {"type": "string"}}, ["prompt"])
    return {"required": True, "content": {"application/json": {"schema": json_body},
                                          "multipart/form-data": {"schema": form_body}}}


# ================================================================================================
# Operations
# ================================================================================================


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_RETRY_AFTER = {"Retry-After": {"description": "seconds until a submit can be admitted",
                                "schema": {"type": "integer", "minimum": 1}}}


def _errors(envelope: str, statuses: Iterable[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        answer = _json(_ref(envelope), f"refused ({envelope})")
        if status == 429:
            answer["headers"] = _RETRY_AFTER
        out[str(status)] = answer
    return out


_SUBMIT = (400, 401, 403, 404, 409, 413, 415, 429, 503, 507)  # 415: api/guards.py
_READ = (400, 401, 403, 404, 503)


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _path(name: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": description}


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    """``(method, path) -> operation`` (OpenAPI paths: no convertor suffixes)."""
    from reelserve.api.m2v.schema import PATHS as M2V_PATHS
    from reelserve.observability.metrics import CONTENT_TYPE

    runware_tasks = {"type": "array", "minItems": 1, "items": _ref("RunwareTask")}
    ops: dict[tuple[str, str], dict[str, Any]] = {
        ("post", "/v1"): {
            "summary": "Runware: run a JSON array of tasks", "tags": ["Runware"],
            "security": API_KEY,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": runware_tasks}}},
            "responses": {"200": _json(_ref("RunwareAnswer")),
                          **_errors("RunwareErrors", _SUBMIT)},
        },
        ("get", "/v1/videos"): {
            "security": API_KEY,
            "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                           _query("after", {"type": "string"}, "id of the last video seen"),
                           _query("order", {"enum": ["desc"]})],
            "responses": {"200": _json(_ref("VideoList")), **_errors("OpenAIError", _READ)},
        },
        ("post", "/v1/videos"): {
            "security": API_KEY, "requestBody": _openai_create(),
            "responses": {"200": _json(_ref("Video")), **_errors("OpenAIError", _SUBMIT)},
        },
        ("get", "/v1/videos/{video_id}"): {
            "security": API_KEY, "parameters": [_path("video_id")],
            "responses": {"200": _json(_ref("Video")), **_errors("OpenAIError", _READ)},
        },
        ("delete", "/v1/videos/{video_id}"): {
            "security": API_KEY, "parameters": [_path("video_id")],
            "responses": {"200": _json(_ref("VideoDeleted")),
                          **_errors("OpenAIError", _READ)},
        },
        ("get", "/v1/videos/{video_id}/content"): {
            "security": API_KEY,
            "parameters": [_path("video_id"),
                           _query("variant", {"enum": ["video", "thumbnail"]})],
            "responses": {"200": {"description": "the file", "content": {
                "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                "video/webm": {"schema": {"type": "string", "format": "binary"}},
                "video/quicktime": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors("OpenAIError", (*_READ, 409))},
        },
        ("get", "/v1/tasks"): {
            "security": API_KEY,
            "responses": {"200": _json(_ref("TaskList")), **_errors("RunwareErrors", _READ)},
        },
        ("get", "/v1/tasks/{task_uuid}"): {
            "security": API_KEY,
            "responses": {"200": _json(_ref("Task")), **_errors("RunwareErrors", _READ)},
        },
        ("post", "/v1/tasks/{task_uuid}/cancel"): {
            "security": API_KEY,
            "responses": {"200": _json(_ref("Task")), **_errors("RunwareErrors", _READ)},
        },
        ("get", "/v1/models"): {  # api/openai/router.py models_router
            "summary": "The models this server renders: per id, the workflows served, the "
                       "engine of each and what it supports", "tags": ["Models"],
            "security": API_KEY,
            "responses": {"200": _json(_obj({
                "object": {"const": "list"},
                "data": {"type": "array", "items": _obj({
                    "id": {"type": "string"}, "object": {"const": "model"},
                    "created": {"type": "integer"}, "owned_by": {"type": "string"},
                    "workflows": {"type": "array", "items": {"type": "string"}},
                    "engine": {"type": "object"}, "supports": {"type": "object"},
                }, ["id", "object", "created", "owned_by", "workflows", "engine",
                    "supports"])},
            }, ["object", "data"])), **_errors("OpenAIError", _READ)},
        },
        ("get", "/media/{kind}/{name}"): {
            "summary": "A stored output or upload behind a signed, expiring URL",
            "tags": ["Media"], "security": NO_AUTH,
            "parameters": [_path("kind", "outputs or uploads"), _path("name"),
                           _query("exp", {"type": "string"}, "expiry (unix seconds)"),
                           _query("sig", {"type": "string"}, "signature")],
            "responses": {"200": {"description": "the file", "content": {
                "*/*": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors("MediaError", (404, 410, 503))},
        },
        ("get", "/health"): {"security": NO_AUTH, "responses": {"200": _json(_obj({
            "status": {"const": "ok"}, "version": {"type": "string"}}, ["status"]))}},
        ("get", "/ready"): {"security": NO_AUTH, "responses": {
            "200": _json(_obj({"ready": {"const": True}}, ["ready", "reasons"])),
            "503": _json(_obj({"ready": {"const": False},
                               "reasons": {"type": "array", "items": {"type": "string"}}},
                              ["ready", "reasons"]), "not ready; `reasons` says why")}},
        ("get", "/metrics"): {"security": NO_AUTH, "responses": {"200": {
            "description": "Prometheus text exposition",
            "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}}},
        ("get", "/klingai/task/{task_id}/fetch"): {
            "security": API_KEY,
            "responses": {"200": _json(_ref("M2vAnswer")), **_errors("M2vError", _READ)},
        },
    }
    for kind in ("text2video", "image2video"):
        ops[("post", f"/v1/videos/{kind}")] = {
            "security": KLING_JWT,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _kling_body(kind)}}},
            "responses": {"200": _json(_ref("KlingAnswer")), **_errors("KlingError", _SUBMIT)},
        }
        ops[("get", f"/v1/videos/{kind}")] = {
            "security": KLING_JWT,
            "parameters": [_query("pageNum", {"type": "integer", "minimum": 1, "maximum": 1000}),
                           _query("pageSize", {"type": "integer", "minimum": 1,
                                               "maximum": 500})],
            "responses": {"200": _json(_ref("KlingAnswer")), **_errors("KlingError", _READ)},
        }
        ops[("get", f"/v1/videos/{kind}/{{task_id}}")] = {
            "security": KLING_JWT,
            "responses": {"200": _json(_ref("KlingAnswer")), **_errors("KlingError", _READ)},
        }
    for route in M2V_PATHS.values():
        ops[("post", f"/klingai/{route.name}")] = {
            "security": API_KEY,
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": _m2v_form(route.text_only)}}},
            "responses": {"200": _json(_ref("M2vAnswer")), **_errors("M2vError", _SUBMIT)},
        }
    return ops


_CONVERTOR = re.compile(r"\{([^}:]+):[^}]+\}")


def _openapi_path(path: str) -> str:
    """``/v1/videos/{video_id:video_id}`` -> ``/v1/videos/{video_id}``."""
    return _CONVERTOR.sub(r"{\1}", path)


def http_routes(app: FastAPI) -> list[tuple[str, set[str], Any]]:
    """Every HTTP route of ``app`` (included routers too): ``(path, methods, route)``."""
    out = []
    for context in routing.iter_route_contexts(app.routes):
        route = context.original_route
        methods = getattr(route, "methods", None)
        if methods:
            out.append((str(context.path), set(methods), route))
    return out


_INTERNAL = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/", "/favicon.ico",
             "/playground/{name}", "/v1/"}
"""Routes not described: the schema itself, the docs and playground pages, ``/v1/`` (an alias
of ``/v1``)."""


def build_schema(app: FastAPI) -> dict[str, Any]:
    """The full OpenAPI 3.1 document of ``app``."""
    base = get_openapi(title="reelserve", version=reelserve.__version__,
                       description=DESCRIPTION, routes=app.routes)
    paths: dict[str, dict[str, Any]] = base.setdefault("paths", {})
    ops = _operations()
    for path, methods, _route in http_routes(app):
        if path in _INTERNAL:
            continue
        open_path = _openapi_path(path)
        for method in sorted(m.lower() for m in methods if m != "HEAD"):
            generated = paths.setdefault(open_path, {}).get(method, {})
            overlay = copy.deepcopy(ops.get((method, open_path)))
            if overlay is None:  # tests/api/test_openapi.py fails on this
                continue
            params = {p["name"]: p for p in generated.get("parameters", [])}
            for param in overlay.pop("parameters", []):
                params[param["name"]] = param
            for name in re.findall(r"\{([^}]+)\}", open_path):
                params.setdefault(name, _path(name))
            operation = {**generated, **overlay}
            operation.pop("responses", None)
            operation["responses"] = overlay["responses"]
            if params:
                operation["parameters"] = list(params.values())
            operation.setdefault("operationId", f"{method}_{open_path}".replace("/", "_"))
            paths[open_path][method] = operation
    components = base.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # FastAPI's generated validation-error models: no route answers them (400 envelopes do).
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(_error_schemas())
    schemas.update(_answer_schemas())
    schemas.update(_runware_tasks())
    components["securitySchemes"] = SECURITY_SCHEMES
    base["security"] = API_KEY
    return base


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_schema` at ``/openapi.json`` (built once, on first request) and
    answer 405s with the ``Allow`` of every route on the path."""
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if "schema" not in cached:
            cached["schema"] = build_schema(app)
        app.openapi_schema = cached["schema"]
        return cached["schema"]

    app.openapi = openapi  # type: ignore[method-assign]

    async def handler(request: Request, exc: Exception) -> Response:
        return await method_not_allowed(app, request, exc)

    app.add_exception_handler(StarletteHTTPException, handler)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods some route of ``app`` takes on ``path`` (sorted)."""
    methods: set[str] = set()
    for _, route_methods, route in http_routes(app):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= route_methods
    return sorted(methods)


async def method_not_allowed(app: FastAPI, request: Request, exc: Exception) -> Response:
    """FastAPI's HTTP error answer, with a 405's ``Allow`` listing every route's methods."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    allow = ", ".join(allowed_methods(app, request.url.path))
    return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": allow})
