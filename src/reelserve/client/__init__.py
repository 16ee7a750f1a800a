"""Python client for a reelserve server (the Runware REST protocol), sync and async.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) upload media, run
``videoInference`` tasks (submitted async, then polled with ``getResponse``), search the model
catalog and download results. Server refusals are raised as :mod:`reelserve.errors` classes
carrying the server's ``code``, ``message`` and ``parameter``. The API key comes from the
``api_key`` argument or ``REELSERVE_API_KEY``.

This is user-side code: it imports httpx only, never the server.
"""

from reelserve.client._wire import API_KEY_ENV, VideoResult, error_from_wire
from reelserve.client.aio import AsyncClient
from reelserve.client.sync import Client

__all__ = ["API_KEY_ENV", "AsyncClient", "Client", "VideoResult", "error_from_wire"]
