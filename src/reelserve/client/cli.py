"""The ``reelserve generate`` command: one videoInference task through :class:`Client`.

``reelserve.cli`` parses the arguments and calls :func:`generate`. It prints one line per video
written (path, seed, cost) and returns an exit code: 0 done, 2 the server refused the request
(bad parameters, bad key, unknown model or task), 1 anything else (unreachable server, the
generation failed, timeout).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from reelserve.errors import ErrorKind, ReelserveError

# Kinds that mean "the request itself was refused": fixing the command line may help.
_REFUSALS = {ErrorKind.INVALID, ErrorKind.AUTH, ErrorKind.FORBIDDEN, ErrorKind.NOT_FOUND,
             ErrorKind.CONFLICT, ErrorKind.TOO_LARGE, ErrorKind.RATE_LIMIT}


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)`` (an argparse type)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}")
    return int(width), int(height)


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
    frames: list[dict[str, str]] = []
    if first is not None:
        frames.append({"image": first, "frame": "first"})
    if last is not None:
        frames.append({"image": last, "frame": "last"})
    if frames:
        params["inputs"] = {"frameImages": frames}
    return params


def output_paths(output: Path | None, count: int, names: list[str]) -> list[Path]:
    """Where each of ``count`` videos goes: ``-o out.mp4`` for one, ``out-1.mp4``, ``out-2.mp4``
    ... for several, ``<videoUUID>.<ext>`` inside ``-o DIR`` or the working directory."""
    if output is None or output.is_dir():
        folder = output or Path.cwd()
        return [folder / name for name in names]
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, count + 1)]


def _describe(exc: ReelserveError) -> str:
    text = f"error: {exc.code}: {exc.message}"
    if exc.parameter:
        text += f" (parameter: {exc.parameter})"
    # Most server messages already list the allowed values; do not say it twice.
    if exc.allowed_values and "allowed" not in exc.message.lower():
        text += f"; allowed: {', '.join(str(v) for v in exc.allowed_values)}"
    return text


def generate(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``reelserve generate``; see the module docstring for the exit codes."""
    from reelserve.client import Client

    out = out or sys.stdout
    err = err or sys.stderr
    # httpx logs every request at INFO; the command's own output says what happened.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    show_progress = err.isatty()

    def progress(percent: int) -> None:
        if show_progress:
            print(f"\rgenerating: {percent:3d}%", end="", file=err, flush=True)

    try:
        with Client(args.url, args.api_key, timeout=args.request_timeout) as client:
            first = client.upload_image(args.image) if args.image is not None else None
            last = client.upload_image(args.last_image) if args.last_image is not None else None
            results = client.video_inference(**build_params(args, first, last),
                                             timeout=args.timeout, on_progress=progress)
            if show_progress:
                print(file=err)
            names = [f"{r.video_uuid}.{r.extension()}" for r in results]
            for result, path in zip(results, output_paths(args.output, len(results), names),
                                    strict=True):
                written = client.download(result, path)
                cost = f"{result.cost:g} USD" if result.cost is not None else "n/a"
                print(f"{written}\tseed={result.seed}\tcost={cost}", file=out)
    except ReelserveError as exc:
        if show_progress:
            print(file=err)
        print(_describe(exc), file=err)
        return 2 if exc.kind in _REFUSALS else 1
    return 0
