"""``uploadEndpoint``: PUT the raw output bytes to the client's URL (often a presigned S3 URL).

The body is exactly the stored file and ``Content-Type`` is the output's type (``video/mp4``,
``video/webm``, ``video/quicktime``); no other headers are added, since presigned URLs often sign
the header set. Retries are the dispatcher's business (same schedule as webhooks).
"""

from __future__ import annotations

from reelserve.delivery.webhook import Attempt, send
from reelserve.media import netguard

__all__ = ["put"]


def put(url: str, data: bytes, *, content_type: str, policy: netguard.OutboundPolicy) -> Attempt:
    """PUT ``data`` once; a 2xx answer is success."""
    headers = {"Content-Type": content_type}
    return send("PUT", url, data, headers, policy=policy, parameter="uploadEndpoint")
