"""The client commands: ``reelserve generate``, ``reelserve tasks list|show|cancel|download`` and
``reelserve models`` (the catalog and what renders each id here).

``reelserve.cli`` builds the parser with :func:`add_client_commands` and calls the functions
here. Exit codes: 0 done, 2 the server refused the request (bad parameters, bad key, unknown model
or task) or the command line is wrong, 1 anything else (unreachable server, the generation failed
or was cancelled, timeout), 130 interrupted. Every failure prints one ``error: code: message``
line on stderr, never a traceback.

Progress: on a terminal, a live ``rich`` display (status, bar, percent, elapsed, ETA); when stderr
is piped, one plain line per status change and per 10 % step, so logs show that the job waits
in the queue or renders.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from reelserve.errors import ErrorKind, MediaError, ReelserveError, ValidationError

if TYPE_CHECKING:
    from reelserve.client import Client
    from reelserve.client._wire import VideoResult
    from reelserve.settings import Settings

log = logging.getLogger("reelserve.client")

# Kinds that mean "the request itself was refused": fixing the command line may help.
_REFUSALS = {ErrorKind.INVALID, ErrorKind.AUTH, ErrorKind.FORBIDDEN, ErrorKind.NOT_FOUND,
             ErrorKind.CONFLICT, ErrorKind.TOO_LARGE, ErrorKind.RATE_LIMIT}

TERMINAL = ("succeeded", "failed", "cancelled")
KEYLESS_WARNING = ("warning: this server has no API keys (REELSERVE_API_KEYS is empty); the key "
                   "you gave is ignored, and every loopback client shares one task list")


# ------------------------------------------------------------------------------------ parsing


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)`` (an argparse type)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}")
    return int(width), int(height)


def _camera_rules() -> tuple[list[str], list[str]]:
    """(preset types, axes of the ``simple`` type) from the catalog this package ships."""
    from reelserve.catalog import get_catalog

    rules = get_catalog().camera
    return [t for t in rules.types if t != "simple"], list(rules.axes)


def parse_camera_axis(text: str) -> tuple[str, float]:
    """``"zoom=5"`` -> ``("zoom", 5.0)`` (an argparse type; axes from the catalog)."""
    _, axes = _camera_rules()
    axis, sep, value = text.partition("=")
    axis = axis.strip().lower()
    if not sep or axis not in axes:
        raise argparse.ArgumentTypeError(
            f"--camera takes AXIS=VALUE with AXIS one of {', '.join(axes)}, got {text!r}")
    try:
        return axis, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--camera {axis}= needs a number, got {value!r}") from None


def camera_control(axes: list[tuple[str, float]] | None,
                   preset: str | None) -> dict[str, Any] | None:
    """The wire ``cameraControl`` object for ``--camera``/``--camera-preset`` (None: neither)."""
    if preset:
        return {"type": preset}
    if axes:
        return {"type": "simple", "config": dict(axes)}
    return None


def build_params(args: argparse.Namespace, first: str | None, last: str | None) -> dict[str, Any]:
    """The videoInference wire fields for the parsed arguments and uploaded frame UUIDs."""
    params: dict[str, Any] = {"model": args.model, "includeCost": True,
                              "numberResults": args.number_results,
                              "outputFormat": args.format.upper()}
    if args.prompt is not None:
        params["positivePrompt"] = args.prompt
    if args.negative_prompt is not None:
        params["negativePrompt"] = args.negative_prompt
    if args.duration is not None:
        # "5" on the command line is the integer 5 on the wire, as the catalog lists it.
        duration = float(args.duration)
        params["duration"] = int(duration) if duration.is_integer() else duration
    if args.size is not None:
        params["width"], params["height"] = args.size
    if args.seed is not None:
        params["seed"] = args.seed
    if args.cfg_scale is not None:
        params["CFGScale"] = args.cfg_scale
    camera = camera_control(getattr(args, "camera", None), getattr(args, "camera_preset", None))
    if camera is not None:
        params["providerSettings"] = {"klingai": {"cameraControl": camera}}
    frames: list[dict[str, str]] = []
    if first is not None:
        frames.append({"image": first, "frame": "first"})
    if last is not None:
        frames.append({"image": last, "frame": "last"})
    if frames:
        params["inputs"] = {"frameImages": frames}
    return params


# ------------------------------------------------------------------------------------ outputs


def output_paths(output: Path | None, count: int, names: list[str]) -> list[Path]:
    """Where each of ``count`` videos goes: ``-o out.mp4`` for one, ``out-1.mp4``, ``out-2.mp4``
    ... for several, ``<videoUUID>.<ext>`` inside ``-o DIR`` or the working directory."""
    if output is None or output.is_dir() or str(output).endswith(("/", os.sep)):
        folder = output or Path.cwd()
        folder.mkdir(parents=True, exist_ok=True)
        return [folder / name for name in names]
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, count + 1)]


def check_output(output: Path | None) -> None:
    """Refuse an output path that cannot be written, before anything is uploaded or rendered.

    ``-o DIR/`` (trailing slash) may name a folder to create under an existing one; a file path
    needs an existing, writable folder.
    """
    def refuse(why: str) -> ValidationError:
        return ValidationError("invalidOutputPath", f"cannot write the video to {str(output)!r}: "
                               f"{why}; nothing was submitted", parameter="--output")

    target = output if output is not None else Path.cwd()
    if output is None or target.is_dir():
        folder = target
    elif str(output).endswith(("/", os.sep)):
        folder = target
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise refuse(f"{str(folder)!r} is not a folder")
    else:
        folder = target.parent
        if not folder.exists():
            raise refuse(f"the folder {str(folder)!r} does not exist")
        if not folder.is_dir():
            raise refuse(f"{str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise refuse(f"the folder {str(folder)!r} is not writable")


def check_inputs(*paths: str | None) -> None:
    """Refuse a local input file that cannot be read, before anything is submitted."""
    for source in paths:
        if source is None or source.startswith(("http://", "https://", "data:")):
            continue
        if not Path(source).is_file():
            raise MediaError("invalidMediaPath", f"cannot read {source!r}: no such file",
                             parameter="image")


# ------------------------------------------------------------------------------------ progress


class ProgressView(Protocol):
    """Shows one task's progress while the command waits for it."""

    def update(self, status: str, progress: int, position: int | None = None) -> None:
        """Take the task's current status, percent and (queued) place in the queue."""

    def close(self) -> None:
        """Stop drawing (the task ended or the command stops)."""


def _eta(started: float | None, progress: int) -> float | None:
    """Seconds left, from the rate since rendering began (None until there is a rate)."""
    if started is None or progress <= 0 or progress >= 100:
        return None
    spent = time.monotonic() - started
    return spent * (100 - progress) / progress


def _status_text(status: str, position: int | None = None) -> str:
    if status == "queued" and position is not None:  # the server's queuePosition
        return ("queued: next in line" if position == 0 else
                f"queued: {position} job{'s' if position != 1 else ''} ahead")
    return {"queued": "queued: waiting for a free worker",
            "running": "rendering",
            "cancelling": "cancelling"}.get(status, status)


class PlainProgress:
    """One line per status change and per 10 % step: readable in a log or a CI job."""

    def __init__(self, task_uuid: str, err: TextIO) -> None:
        self.task_uuid = task_uuid
        self.err = err
        self.start = time.monotonic()
        self.running_since: float | None = None
        self.last: tuple[str, int, int | None] | None = None

    def update(self, status: str, progress: int, position: int | None = None) -> None:
        if status == "running" and self.running_since is None:
            self.running_since = time.monotonic()
        step = progress // 10 * 10
        if self.last == (status, step, position):  # a queue move prints a line too
            return
        self.last = (status, step, position)
        elapsed = time.monotonic() - self.start
        line = f"task {self.task_uuid}: {_status_text(status, position)}"
        if status == "running":
            line += f" {progress:3d}%"
            eta = _eta(self.running_since, progress)
            line += f", elapsed {elapsed:.0f}s" + (f", eta {eta:.0f}s" if eta is not None else "")
        else:
            line += f", elapsed {elapsed:.0f}s"
        print(line, file=self.err, flush=True)

    def close(self) -> None:
        """Nothing to release: plain progress lines hold no terminal state."""


class RichProgress:
    """A live bar on a terminal: status, percent, elapsed and remaining time."""

    def __init__(self, task_uuid: str, err: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            TaskProgressColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(),
            console=Console(file=err), transient=False)
        self._task = self._progress.add_task(f"{task_uuid[:8]} queued", total=100)
        self._short = task_uuid[:8]
        self._progress.start()

    def update(self, status: str, progress: int, position: int | None = None) -> None:
        self._progress.update(self._task, completed=progress,
                              description=f"{self._short} {_status_text(status, position)}")

    def close(self) -> None:
        self._progress.stop()


def progress_view(task_uuid: str, err: TextIO, quiet: bool) -> ProgressView | None:
    """Rich on a terminal, plain lines when piped, nothing with ``--quiet``."""
    if quiet:
        return None
    if err.isatty():
        return RichProgress(task_uuid, err)
    return PlainProgress(task_uuid, err)


# ------------------------------------------------------------------------------------ errors


def describe(exc: ReelserveError) -> str:
    """One line for an error: code, message, parameter, allowed values (not said twice)."""
    message = exc.message
    allowed = exc.allowed_values
    if exc.code == "modelNotFound":
        # The model list is printed once, by the caller, in a readable column.
        message = message.split("; allowed", 1)[0].split("; available", 1)[0]
        allowed = None
    text = f"error: {exc.code}: {message}"
    if exc.parameter:
        text += f" (parameter: {exc.parameter})"
    # Most server messages already list the allowed values; do not say it twice.
    if allowed and "allowed" not in message.lower():
        text += f"; allowed: {', '.join(str(v) for v in allowed)}"
    return text


def _exit_code(exc: ReelserveError) -> int:
    return 2 if exc.kind in _REFUSALS else 1


def _print_models(client: Client, err: TextIO) -> None:
    try:
        models = client.model_search(limit=100)["results"]
    except ReelserveError:
        return
    print("models on this server:", file=err)
    for model in models:
        print(f"  {model.get('air')}\t{model.get('name', '')}", file=err)


def run_command(body: Callable[[], int], err: TextIO) -> int:
    """Run a client command: its errors become one line and an exit code, never a traceback."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return body()
    except ReelserveError as exc:
        print(describe(exc), file=err)
        return _exit_code(exc)
    except OSError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=err)
        return 1
    except Exception as exc:  # the promise: a message, never a traceback
        log.debug("unexpected client error", exc_info=True)
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --log-level debug "
              "for details)", file=err)
        return 1


def _client(args: argparse.Namespace) -> Client:
    from reelserve.client import Client

    return Client(args.url, args.api_key, timeout=args.request_timeout)


def _warn_keyless(client: Client, err: TextIO) -> None:
    if client.api_key and client.auth_mode == "keyless":
        print(KEYLESS_WARNING, file=err)


# ------------------------------------------------------------------------------------ generate


def wait_task(client: Client, task_uuid: str, expected: int, timeout: float,
              view: ProgressView | None, poll_interval: float = 0.5) -> list[VideoResult]:
    """Follow a task on ``/v1/tasks`` (status, progress) until it ends, then collect its videos
    through ``getResponse`` (which raises the task's error if it failed or was cancelled)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            task = client.get_task(task_uuid)
            status = str(task.get("status"))
            progress = int(task.get("progress") or 0)
            position = task.get("queuePosition")  # queued tasks only (older servers: absent)
            if view is not None:
                view.update(status, progress,
                            position if isinstance(position, int) else None)
            if status in TERMINAL:
                break
            if time.monotonic() >= deadline:
                raise ReelserveError(
                    "timeoutClient", f"task {task_uuid} did not finish within {timeout:g} s; it "
                    f"keeps running on the server: `reelserve tasks show {task_uuid}`, "
                    f"`reelserve tasks download {task_uuid}` or `reelserve tasks cancel "
                    f"{task_uuid}`", parameter="--timeout", kind=ErrorKind.TIMEOUT)
            time.sleep(poll_interval)
    finally:
        if view is not None:
            view.close()
    return client.wait_for(task_uuid, expected, timeout=max(30.0, deadline - time.monotonic()))


def generate(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``reelserve generate``; see the module docstring for the exit codes."""
    out = out or sys.stdout
    err = err or sys.stderr

    def body() -> int:
        # Everything that can be checked here is, before a job exists (and is billed).
        check_output(args.output)
        check_inputs(args.image, args.last_image)
        client = _client(args)
        with client:
            client.list_tasks(limit=1)  # the key is checked before uploading anything
            _warn_keyless(client, err)
            first = client.upload_image(args.image) if args.image is not None else None
            last = client.upload_image(args.last_image) if args.last_image is not None else None
            params = build_params(args, first, last)
            try:
                task_uuid = client.submit(**params)
            except ReelserveError as exc:
                if exc.code != "modelNotFound":
                    raise
                print(describe(exc), file=err)
                _print_models(client, err)  # once, while the connection is open
                return _exit_code(exc)
            if not args.quiet:
                print(f"task {task_uuid} submitted", file=err, flush=True)
            try:
                results = wait_task(client, task_uuid, args.number_results, args.timeout,
                                    progress_view(task_uuid, err, args.quiet))
            except KeyboardInterrupt:
                print(f"\ninterrupted; task {task_uuid} keeps running on the server "
                      f"(`reelserve tasks cancel {task_uuid}` stops it)", file=err)
                return 130
            names = [f"{r.video_uuid}.{r.extension()}" for r in results]
            for result, path in zip(results, output_paths(args.output, len(results), names),
                                    strict=True):
                written = client.download(result, path)
                cost = f"{result.cost:g} USD" if result.cost is not None else "n/a"
                print(f"{written}\tseed={result.seed}\tcost={cost}", file=out)
        return 0

    return run_command(body, err)


# ------------------------------------------------------------------------------------ tasks


def _short_time(iso: str | None) -> str:
    return (iso or "").replace("T", " ")[:19]


def tasks_command(args: argparse.Namespace, out: TextIO | None = None,
                  err: TextIO | None = None) -> int:
    """``reelserve tasks list|show|cancel|download``."""
    out = out or sys.stdout
    err = err or sys.stderr

    def body() -> int:
        with _client(args) as client:
            if args.tasks_command == "list":
                page = client.list_tasks(status=args.status, limit=args.limit, cursor=args.cursor)
                _warn_keyless(client, err)
                if args.json:
                    print(json.dumps(page, indent=2), file=out)
                    return 0
                rows = [("TASK", "STATUS", "PROGRESS", "MODEL", "ORIGIN", "CREATED (UTC)",
                         "PROMPT")]
                for task in page["data"]:
                    rows.append((task["taskUUID"], task["status"], f"{task['progress']}%",
                                 task["model"], task["origin"], _short_time(task["createdAt"]),
                                 (task.get("prompt") or "")[:40]))
                widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
                for row in rows:
                    print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                          .rstrip(), file=out)
                if page.get("nextCursor"):
                    print(f"more: reelserve tasks list --cursor {page['nextCursor']}", file=err)
                return 0
            if args.tasks_command == "show":
                task = client.get_task(args.task_uuid)
                _warn_keyless(client, err)
                if args.json:
                    print(json.dumps(task, indent=2), file=out)
                    return 0
                for key in ("taskUUID", "status", "progress", "model", "workflow", "origin",
                            "prompt", "createdAt", "updatedAt", "cost"):
                    if task.get(key) is not None:
                        print(f"{key}: {task[key]}", file=out)
                if task.get("error"):
                    error = task["error"]
                    print(f"error: {error.get('code')}: {error.get('message')}", file=out)
                for result in task.get("results") or []:
                    print(f"result: {result['url']}", file=out)
                return 0
            if args.tasks_command == "cancel":
                task = client.cancel_task(args.task_uuid)
                _warn_keyless(client, err)
                print(f"{task['taskUUID']}\t{task['status']}", file=out)
                return 0
            # download
            check_output(args.output)
            task = client.get_task(args.task_uuid)
            _warn_keyless(client, err)
            from reelserve.client._wire import task_results

            results = task_results(task)
            if not results:
                state = task.get("status")
                why = (f": {task['error'].get('code')}: {task['error'].get('message')}"
                       if task.get("error") else "")
                raise ReelserveError(
                    "noResults", f"task {args.task_uuid} has no video to download (status "
                    f"{state}{why})", parameter="taskUUID",
                    kind=ErrorKind.NOT_FOUND if state in TERMINAL else ErrorKind.UNAVAILABLE)
            names = [f"{r.video_uuid}.{r.extension()}" for r in results]
            for result, path in zip(results, output_paths(args.output, len(results), names),
                                    strict=True):
                print(f"{client.download(result, path)}\tseed={result.seed}", file=out)
            return 0

    return run_command(body, err)


# ------------------------------------------------------------------------------------ models


def models_catalog(settings: Settings, out: TextIO | None = None) -> int:
    """Print the catalog: each model id, its workflows and what renders each on this install
    (a diffusers profile and whether its weights are present, the preview engine, or nothing)."""
    from reelserve.catalog import get_catalog

    out = out or sys.stdout
    profiles = None
    if settings.profiles is not None:
        from reelserve.engines.diffusers.profiles import ProfileSet

        profiles = ProfileSet.load(settings.profiles, check_weights=False)
    fallback = "preview engine" if settings.preview_fallback else "refused (no profile)"
    rows = [("MODEL", "NAME", "WORKFLOW", "RENDERED BY")]
    for air, model in get_catalog().models.items():
        for workflow in model.workflows:
            entry = profiles.get(air, workflow) if profiles is not None else None
            if entry is None:
                engine = fallback
            else:
                present = (entry.profile.weights / "model_index.json").is_file()
                engine = f"diffusers {entry.profile.pipeline} ({entry.profile.weights.name}" + (
                    ")" if present else ", weights missing: reelserve models pull)")
            rows.append((air, model.name, workflow.value, engine))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if profiles is None:
        print("\nno REELSERVE_PROFILES set: every model renders with the CPU preview engine "
              "(see docs/diffusers.md)", file=out)
    return 0


# ------------------------------------------------------------------------------------ parser


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("REELSERVE_URL", "http://127.0.0.1:8000"),
                        help="server root URL (default: REELSERVE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="API key (default: REELSERVE_API_KEY)")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds per HTTP request")


def add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``generate`` and ``tasks`` to the ``reelserve`` parser."""
    presets, axes = _camera_rules()
    gen = sub.add_parser("generate", help="generate videos on a running server (Runware client)")
    _connection(gen)
    gen.add_argument("--model", required=True, help="AIR id, e.g. klingai:1@1 "
                     "(`reelserve models` lists them)")
    gen.add_argument("--prompt", help="positivePrompt")
    gen.add_argument("--negative", "--negative-prompt", dest="negative_prompt",
                     help="negativePrompt: what the video should not show")
    gen.add_argument("--image", help="first frame: a file or an http(s) URL (imageUpload)")
    gen.add_argument("--last-image", help="last frame: a file or an http(s) URL")
    gen.add_argument("--duration", type=float, help="seconds (the model's allowed values)")
    gen.add_argument("--size", type=parse_size, help="WIDTHxHEIGHT, e.g. 1280x720")
    gen.add_argument("--format", default="MP4", type=str.upper, choices=["MP4", "WEBM", "MOV"])
    gen.add_argument("--number-results", type=int, default=1, help="videos to make (1-4)")
    gen.add_argument("--seed", type=int, help="seed of the first video")
    gen.add_argument("--cfg", "--cfg-scale", dest="cfg_scale", type=float,
                     help="CFGScale 0-1: how closely to follow the prompt")
    camera = gen.add_mutually_exclusive_group()
    camera.add_argument("--camera", type=parse_camera_axis, action="append", metavar="AXIS=VALUE",
                        help=f"camera move, AXIS one of {', '.join(axes)}, VALUE -10..10 "
                        "(e.g. --camera zoom=5; Kling takes exactly one non-zero axis)")
    camera.add_argument("--camera-preset", choices=presets,
                        help="a preset camera movement")
    gen.add_argument("-o", "--output", type=Path,
                     help="output file (out-1.mp4, out-2.mp4, ... for several) or directory; "
                     "checked before anything is submitted")
    gen.add_argument("--timeout", type=float, default=900.0,
                     help="seconds to wait; the task keeps running after it")
    gen.add_argument("-q", "--quiet", action="store_true",
                     help="no progress on stderr (errors are still printed)")
    gen.set_defaults(func=generate)

    tasks = sub.add_parser("tasks", help="list, show, cancel or download this key's tasks "
                           "(any dialect)")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    listing = tasks_sub.add_parser("list", help="this key's tasks, newest first")
    _connection(listing)
    listing.add_argument("--status", action="append",
                         choices=["queued", "running", "succeeded", "failed", "cancelled"],
                         help="only tasks in this status (repeatable)")
    listing.add_argument("--limit", type=int, default=20, help="tasks per page (1-100)")
    listing.add_argument("--cursor", help="the page after this cursor (printed by list)")
    listing.add_argument("--json", action="store_true", help="print the raw JSON page")
    for name, text in (("show", "one task: status, progress, error, result URLs"),
                       ("cancel", "cancel a queued or running task"),
                       ("download", "download a finished task's videos")):
        command = tasks_sub.add_parser(name, help=text)
        _connection(command)
        command.add_argument("task_uuid", metavar="TASK_UUID")
        if name == "show":
            command.add_argument("--json", action="store_true", help="print the raw JSON")
        if name == "download":
            command.add_argument("-o", "--output", type=Path,
                                 help="file (out-1.mp4, ... for several) or directory")
    tasks.set_defaults(func=tasks_command)
