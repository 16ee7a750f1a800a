"""Getting results to clients: artifact stores, webhooks, uploads, the delivery outbox.

:func:`open_artifacts` is the one artifact-store factory. It lives here rather than in
:mod:`reelserve.delivery.storage` so that the protocol module imports no implementation:
:mod:`~reelserve.delivery.s3` builds on :mod:`~reelserve.delivery.storage`, and only this factory
picks between them (importing boto3 only when an ``s3://`` URL is configured).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reelserve.delivery.storage import ArtifactStore
    from reelserve.settings import Settings

__all__ = ["open_artifacts"]


def open_artifacts(settings: Settings) -> ArtifactStore:
    """The artifact store named by ``settings``.

    Files in ``<data_dir>/artifacts`` by default; ``artifacts_url=s3://BUCKET/PREFIX`` opens
    :class:`~reelserve.delivery.s3.S3ArtifactStore`, whose module imports boto3 (the ``s3``
    extra), so installs without it never load it. Opening an S3 store checks the bucket and
    fails with ``artifactStoreUnavailable`` when it cannot be used.
    """
    from reelserve.delivery.storage import LocalArtifactStore
    from reelserve.errors import ValidationError

    if not settings.artifacts_url:
        return LocalArtifactStore(Path(settings.data_dir) / "artifacts")
    try:
        from reelserve.delivery.s3 import S3ArtifactStore
    except ImportError as exc:
        raise ValidationError(
            "unsupportedArtifactsUrl",
            f"artifacts_url is an s3:// URL but boto3 is not installed ({exc}); install the "
            "extra: pip install 'reelserve[s3]'",
            parameter="artifacts_url",
        ) from exc
    return S3ArtifactStore.from_settings(settings)
