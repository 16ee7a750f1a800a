"""`import reelserve` and the server's import path stay light (STYLE.md rule 9).

Checked in a fresh subprocess, like click's test_imports.py, so modules imported by other
tests in this session cannot hide a regression.
"""

from __future__ import annotations

import json
import subprocess
import sys

# psycopg: the PostgreSQL driver loads only when a postgresql:// database URL is opened; boto3
# (and botocore) only when an s3:// artifacts URL is.
HEAVY = ("torch", "diffusers", "transformers", "av", "ray", "accelerate", "psycopg",
         "psycopg_pool", "boto3", "botocore")


def _imported_after(statement: str) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    modules = set(json.loads(out.strip().splitlines()[-1]))
    return [name for name in HEAVY if name in modules]


def test_import_reelserve_is_light() -> None:
    assert _imported_after("import reelserve") == []


def test_server_import_path_is_light() -> None:
    # Everything the API process imports to serve requests: app factory, CLI, catalog.
    statement = "import reelserve.cli, reelserve.api.app, reelserve.catalog.validate"
    assert _imported_after(statement) == []
