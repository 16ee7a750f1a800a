"""Command line: ``reelserve serve | worker | workers | generate | tasks | models | doctor``.

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
    for name in ("host", "port", "data_dir", "workers", "shutdown_grace"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from reelserve.api.app import create_app

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Profiles (and --preload ids) are checked before anything listens: a bad file stops here.
    registry = _engines_at_start(settings, args.preload)
    app = create_app(settings, select_engine=registry, preload=args.preload)
    logging.getLogger("reelserve").info(
        "reelserve %s serving on %s (data dir %s, %d worker thread(s))",
        __version__, settings.base_url, settings.data_dir, settings.workers)
    # uvicorn's own WebSocket frame cap (16 MiB) would close the socket before our
    # payloadTooLarge error for frames between it and max_body_bytes; give it headroom.
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=args.log_level, access_log=args.access_log,
                            ws_max_size=settings.max_body_bytes + (1 << 20),
                            # Forwarded headers are believed only from REELSERVE_TRUSTED_PROXIES
                            # (api/auth.py client_address), never by uvicorn's own default.
                            proxy_headers=False)
    _draining_server_class(app)(config).run()
    return 0


def _draining_server_class(app: Any) -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, whose SIGTERM/SIGINT first stops the worker threads claiming.

        Then uvicorn drains as usual (no new connections, open requests answered) and the
        app's shutdown lets running jobs finish for ``shutdown_grace`` seconds, hands back
        the rest and closes the job store last (``create_app``'s lifespan).
        """

        def handle_exit(self, sig: int, frame: Any) -> None:
            stop_claiming = getattr(app.state, "stop_claiming", None)
            if stop_claiming is not None:
                stop_claiming()
            super().handle_exit(sig, frame)

    return DrainingServer


def _worker(args: argparse.Namespace) -> int:
    from reelserve.errors import ValidationError

    settings = _settings(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log = logging.getLogger("reelserve")
    registry = _engines_at_start(settings, args.preload)
    if args.gpus_per_worker is not None and args.gpus is None:
        raise ValidationError("invalidGpus", "--gpus-per-worker needs --gpus (the GPUs to group)",
                              parameter="--gpus-per-worker")
    if args.gpus is not None or args.processes is not None:
        from reelserve.worker.executors import run_supervised
        from reelserve.worker.slots import gpu_slots, process_slots

        slots = (gpu_slots(args.gpus, args.gpus_per_worker) if args.gpus is not None
                 else process_slots(args.processes))
        log.info("reelserve worker on %s: %d supervised process(es) (%s), %d slot(s) each",
                 settings.data_dir, len(slots), ", ".join(slot.label for slot in slots),
                 max(1, settings.workers))
        run_supervised(settings, slots, stop, threads=settings.workers, grace=args.grace,
                       preload=args.preload)
        return 0

    from reelserve.worker.executors import run_standalone

    if args.parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, stop),
                         name="reelserve-parent-watch", daemon=True).start()
    log.info("reelserve worker on %s (%d slot(s))", settings.data_dir, max(1, settings.workers))
    run_standalone(settings, stop, name=args.worker_name, grace=args.grace,
                   select_engine=registry, preload=args.preload)
    return 0


def _engines_at_start(settings: Any, preload: Sequence[str]) -> Any:
    """The engine registry, built (profiles validated, ``--preload`` ids checked) at start.

    Raises the refusal (``invalidProfile`` ...) that ``main`` prints before exiting non-zero.
    """
    from reelserve.engines.diffusers.cli import engines_at_start

    return engines_at_start(settings, preload)


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
        from reelserve import safety

        if safety.wants_pull(settings, args.name):  # the content checker (docs/safety.md)
            return safety.pull_command(settings)
        return diffusers_cli.models_pull(settings, args.name)
    if args.models_command is None:
        from reelserve.client.cli import models_catalog

        return models_catalog(settings)
    return diffusers_cli.models_list(settings)


def _workers(args: argparse.Namespace) -> int:
    """``reelserve workers``: the live workers of the job store and what each renders."""
    import json
    import time

    from reelserve.jobs import open_store

    store = open_store(_settings(args))
    try:
        workers = store.live_workers()
    finally:
        store.close()
    if args.json:
        print(json.dumps([{"worker_id": w.worker_id, "host": w.host, "pid": w.pid,
                           "started_at": w.started_at, "last_seen": w.last_seen,
                           "serves": list(w.serves) if w.serves is not None else None,
                           "capabilities": list(w.capabilities)} for w in workers], indent=2))
    else:
        print(format_workers(workers, time.time()), end="")
    return 0


def format_workers(workers: Sequence[Any], now: float) -> str:
    """The text of ``reelserve workers``: one line per live worker (id, host, pid, up, last
    beat), then one line per engine it renders with (the routes and what they support)."""
    if not workers:
        return ("no live workers: submits are accepted and queued until one registers "
                "(a server with worker threads decides from its own profiles)\n")
    lines = []
    for w in workers:
        up = int(max(0.0, now - w.started_at))
        lines.append(f"{w.worker_id}  host={w.host} pid={w.pid} up={up // 60}m{up % 60:02d}s "
                     f"seen={max(0.0, now - w.last_seen):.0f}s ago  "
                     f"claims={'any job' if w.serves is None else f'{len(w.serves)} route(s)'}")
        groups: dict[str, list[dict[str, Any]]] = {}
        for cap in w.capabilities:
            groups.setdefault(cap.get("pipeline") or cap.get("engine", "?"), []).append(cap)
        for label, caps in sorted(groups.items()):
            routes = (" ".join(f"{c['model']}/{c['workflow']}" for c in caps) if len(caps) <= 6
                      else f"{len(caps)} model/workflow routes")
            extras = [name for name, key in (("sound", "sound"),
                                             ("keepOriginalSound", "keep_original_sound"),
                                             ("referenceImages", "reference_images"),
                                             ("edit", "edit")) if any(c.get(key) for c in caps)]
            moves = sorted({m for c in caps for m in c.get("camera_moves", [])})
            if moves:
                extras.append(f"camera: {len(moves)} move(s)" if len(moves) > 4
                              else f"camera: {','.join(moves)}")
            lines.append(f"  {label}: {routes}" + (f"  [{'; '.join(extras)}]" if extras else ""))
    return "\n".join(lines) + "\n"


def _doctor(args: argparse.Namespace) -> int:
    from reelserve.engines.diffusers import cli as diffusers_cli

    return diffusers_cli.doctor(_settings(args))


def _webhook_secret(args: argparse.Namespace) -> int:
    from reelserve.delivery.webhook import resolve_secret

    print(resolve_secret(_settings(args)))
    return 0


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
    serve.add_argument("--grace", dest="shutdown_grace", type=float, metavar="SECONDS",
                       help="on SIGTERM/SIGINT, how long running jobs may take to finish before "
                       "they go back to the queue (default REELSERVE_SHUTDOWN_GRACE, 10)")
    serve.add_argument("--preload", nargs="+", default=[], metavar="ID",
                       help="model ids whose pipelines are loaded (and compiled) before the "
                       "worker takes jobs")
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
    worker.add_argument("--preload", nargs="+", default=[], metavar="ID",
                        help="model ids whose pipelines are loaded (and compiled) before the "
                        "worker takes jobs")
    worker.add_argument("--name", dest="worker_name",
                        help="label in this worker's lease ids and log lines (e.g. gpu0)")
    worker.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    worker.set_defaults(func=_worker)

    models = sub.add_parser("models", help="the model catalog and what renders each id here "
                            "(no subcommand); diffusers profiles and their weights")
    models_sub = models.add_subparsers(dest="models_command")
    for name in ("profiles", "list"):  # "list" kept for scripts written before "profiles"
        models_sub.add_parser(name, help="diffusers profiles, whether weights are present, "
                              "what each serves")
    pull = models_sub.add_parser("pull", help="download a profile's weights from the hub")
    pull.add_argument("name", help="weights folder name (see `models list`), hub repo id or model "
                      "id; `safety`: the content checker (REELSERVE_SAFETY_MODEL)")
    models.set_defaults(func=_models)

    workers = sub.add_parser("workers", help="the live workers of the job store (all machines "
                             "sharing it) and what each renders")
    workers.add_argument("--data-dir", type=Path, help="the server's data dir")
    workers.add_argument("--json", action="store_true", help="print JSON (with capabilities)")
    workers.set_defaults(func=_workers)

    doctor = sub.add_parser("doctor", help="what engines, devices, weights and settings this install has")
    doctor.set_defaults(func=_doctor)

    secret = sub.add_parser("webhook-secret", help="print the whsec_ secret webhooks are signed "
                            "with (REELSERVE_WEBHOOK_SECRET, else generated in the data dir)")
    secret.add_argument("--data-dir", type=Path, help="the server's data dir")
    secret.set_defaults(func=_webhook_secret)

    # generate and tasks talk to a running server (reelserve.client); options and help live there.
    from reelserve.client.cli import add_client_commands

    add_client_commands(sub)
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
