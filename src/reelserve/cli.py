"""Command line: ``reelserve serve | worker | generate | models | doctor``.

Every setting also comes from ``REELSERVE_*`` environment variables; explicit options win. How
``reelserve worker`` lays out its processes (``--gpus``, ``--processes``) is an option only. One
:class:`~reelserve.settings.Settings` object is built here and passed down explicitly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reelserve import __version__


def _settings(args: argparse.Namespace) -> Any:
    from reelserve.settings import Settings

    overrides: dict[str, Any] = {}
    for name in ("host", "port", "data_dir", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from reelserve.api.app import create_app

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    logging.getLogger("reelserve").info(
        "reelserve %s serving on %s (data dir %s, %d worker thread(s))",
        __version__, settings.base_url, settings.data_dir, settings.workers)
    # uvicorn's own WebSocket frame cap (16 MiB) would close the socket before our
    # payloadTooLarge error for frames between it and max_body_bytes; give it headroom.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level,
                access_log=args.access_log, ws_max_size=settings.max_body_bytes + (1 << 20))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from reelserve.errors import ValidationError

    settings = _settings(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log = logging.getLogger("reelserve")
    if args.gpus_per_worker is not None and args.gpus is None:
        raise ValidationError("invalidGpus", "--gpus-per-worker needs --gpus (the GPUs to group)",
                              parameter="--gpus-per-worker")
    if args.gpus is not None or args.processes is not None:
        from reelserve.worker.executors import gpu_slots, process_slots, run_supervised

        slots = (gpu_slots(args.gpus, args.gpus_per_worker) if args.gpus is not None
                 else process_slots(args.processes))
        log.info("reelserve worker on %s: %d supervised process(es) (%s), %d slot(s) each",
                 settings.data_dir, len(slots), ", ".join(slot.label for slot in slots),
                 max(1, settings.workers))
        run_supervised(settings, slots, stop, threads=settings.workers, grace=args.grace)
        return 0

    from reelserve.worker.loop import run_standalone

    if args.parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, stop),
                         name="reelserve-parent-watch", daemon=True).start()
    log.info("reelserve worker on %s (%d slot(s))", settings.data_dir, max(1, settings.workers))
    run_standalone(settings, stop, name=args.worker_name, grace=args.grace)
    return 0


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """A supervised child stops (finishing its job) when its supervisor is gone, even by kill -9."""
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            logging.getLogger("reelserve").warning(
                "supervisor process %d is gone; stopping after the current job", parent_pid)
            stop.set()


def _models(args: argparse.Namespace) -> int:
    from reelserve.engines.diffusers import cli as diffusers_cli

    settings = _settings(args)
    if args.models_command == "pull":
        return diffusers_cli.models_pull(settings, args.name)
    return diffusers_cli.models_list(settings)


def _doctor(args: argparse.Namespace) -> int:
    from reelserve.engines.diffusers import cli as diffusers_cli

    return diffusers_cli.doctor(_settings(args))


def _size(text: str) -> tuple[int, int]:
    from reelserve.client.cli import parse_size

    return parse_size(text)


def _generate(args: argparse.Namespace) -> int:
    from reelserve.client import cli as client_cli

    return client_cli.generate(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(prog="reelserve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"reelserve {__version__}")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (with worker threads)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--data-dir", type=Path, help="job database, outputs and uploads")
    serve.add_argument("--workers", type=int, help="worker threads beside the server (0: none)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run worker slots only, against a data dir")
    worker.add_argument("--data-dir", type=Path, help="the server's data dir")
    worker.add_argument("--workers", type=int,
                        help="worker slots (threads) per process (default: REELSERVE_WORKERS)")
    layout = worker.add_mutually_exclusive_group()
    layout.add_argument("--gpus", metavar="SPEC",
                        help="supervise one worker process per GPU slot, each with its own "
                        "CUDA_VISIBLE_DEVICES: 0,1,2,3 (four workers, one GPU each) or 0+1,2+3 "
                        "(two workers, two GPUs each)")
    layout.add_argument("--processes", type=int, metavar="N",
                        help="supervise N worker processes sharing the visible devices "
                        "(CPU preview rendering)")
    worker.add_argument("--gpus-per-worker", type=int, metavar="N",
                        help="with --gpus 0,1,2,3: give each worker N consecutive GPUs")
    worker.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM/SIGINT, how long running jobs may take to finish "
                        "(default 30); supervised processes still running 5 s after it are "
                        "killed")
    worker.add_argument("--name", dest="worker_name",
                        help="label in this worker's lease ids and log lines (e.g. gpu0)")
    worker.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    worker.set_defaults(func=_worker)

    models = sub.add_parser("models", help="diffusers profiles and their weights")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="profiles, whether weights are present, what each serves")
    pull = models_sub.add_parser("pull", help="download a profile's weights from the hub")
    pull.add_argument("name", help="weights folder name (see `models list`), hub repo id or model id")
    models.set_defaults(func=_models)

    doctor = sub.add_parser("doctor", help="what engines, devices, weights and settings this install has")
    doctor.set_defaults(func=_doctor)

    gen = sub.add_parser("generate", help="generate videos on a running server (Runware client)")
    gen.add_argument("--url", default="http://127.0.0.1:8000", help="server root URL")
    gen.add_argument("--api-key", help="API key (default: REELSERVE_API_KEY)")
    gen.add_argument("--model", required=True, help="AIR id, e.g. klingai:1@1")
    gen.add_argument("--prompt", help="positivePrompt")
    gen.add_argument("--negative-prompt", help="negativePrompt")
    gen.add_argument("--image", help="first frame: a file or an http(s) URL (imageUpload)")
    gen.add_argument("--last-image", help="last frame: a file or an http(s) URL")
    gen.add_argument("--duration", type=float, help="seconds (the model's allowed values)")
    gen.add_argument("--size", type=_size, help="WIDTHxHEIGHT, e.g. 1280x720")
    gen.add_argument("--format", default="MP4", type=str.upper, choices=["MP4", "WEBM", "MOV"])
    gen.add_argument("--number-results", type=int, default=1, help="videos to make (1-4)")
    gen.add_argument("--seed", type=int, help="seed of the first video")
    gen.add_argument("--cfg-scale", type=float, help="CFGScale (0-1)")
    gen.add_argument("-o", "--output", type=Path,
                     help="output file (out-1.mp4, out-2.mp4, ... for several) or directory")
    gen.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the videos")
    gen.add_argument("--request-timeout", type=float, default=120.0, help="seconds per HTTP request")
    gen.set_defaults(func=_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``reelserve`` and ``python -m reelserve``."""
    args = build_parser().parse_args(argv)
    # A supervised worker's lines carry its slot (``[gpu0]``): all children share one log.
    label = getattr(args, "worker_name", None)
    tag = f"[{label.replace('%', '%%')}] " if label else ""
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")
    from pydantic import ValidationError as SettingsError

    from reelserve.errors import ReelserveError

    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except ReelserveError as exc:
        # A refusal at start (bad profile, unreachable database, ...): its message says what to
        # fix, so print it alone instead of a traceback.
        print(f"reelserve: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(f"reelserve: invalid setting: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
