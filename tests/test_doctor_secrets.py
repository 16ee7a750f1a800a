"""``reelserve doctor`` prints every setting but no secret (issue 11).

The real CLI runs in a subprocess with every secret setting configured through the environment,
as an operator would; no secret string may appear anywhere in what it prints, and each secret
setting shows up as configured. Redaction is by type (:class:`pydantic.SecretStr`), so a secret
setting added later is hidden without a list of names to keep in step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from reelserve.settings import Settings

SECRETS = {
    "REELSERVE_API_KEYS": ("sk-live-alpha-5f1e", "sk-live-beta-77c2"),
    "REELSERVE_KLING_KEYS": ("ak-pub-1:kling-secret-9d0a", "ak-pub-2:kling-secret-3b4c"),
    "REELSERVE_URL_SECRET": ("url-signing-secret-e41f",),
    "REELSERVE_WEBHOOK_SECRET": ("webhook-hmac-secret-a7b9",),
    "REELSERVE_S3_SECRET_ACCESS_KEY": ("s3-secret-key-0c6d",),
    "REELSERVE_DATABASE_URL": ("postgresql://reel:db-password-8e2f@db.invalid:5432/reel",),
}


def test_doctor_prints_no_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELSERVE_")}
    env.update({name: ",".join(values) for name, values in SECRETS.items()})
    env["REELSERVE_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "reelserve", "doctor"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed
    assert "settings:" in printed and "webhook_secret = (set)" in printed
    # each whole value, and the secret halves of Kling pairs and the database password alone
    hidden = [v for values in SECRETS.values() for v in values]
    hidden += ["kling-secret-9d0a", "kling-secret-3b4c", "db-password-8e2f"]
    for secret in hidden:
        assert secret not in printed, f"doctor printed the secret {secret!r}"
    for name in SECRETS:
        assert f"{name.removeprefix('REELSERVE_').lower()} = (set)" in printed


def test_every_secret_setting_is_a_secret_type() -> None:
    """The settings doctor hides are the ones typed as secrets, and those are all of them."""
    settings = Settings(
        api_keys=["k"], kling_keys=["a:s"], url_secret="u", webhook_secret="w",
        s3_secret_access_key="s", database_url="postgresql://u:p@h/d",
    )  # fmt: skip
    for name in ("url_secret", "webhook_secret", "s3_secret_access_key", "database_url"):
        assert isinstance(getattr(settings, name), SecretStr), name
    for name in ("api_keys", "kling_keys"):
        assert all(isinstance(item, SecretStr) for item in getattr(settings, name)), name
    # the values still reach the code that needs them
    assert settings.resolved_database_url == "postgresql://u:p@h/d"
    assert "'p'" not in repr(settings) and "u:p@" not in repr(settings)
