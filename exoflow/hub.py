"""Whether the Hugging Face hub can be reached, found out in seconds: before a download that
would otherwise spend a minute in retries (transformers', datasets') before failing.

``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``) means no: the libraries then read their
caches only. Otherwise one TCP connection to the endpoint (``HF_ENDPOINT``, default
huggingface.co) with a 5 s timeout decides.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

__all__ = ["hub_endpoint", "hub_reachable", "offline"]


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def offline() -> bool:
    """The libraries are told to stay offline (their caches only)."""
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE",
                                                                 "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 5.0) -> bool:
    """True when offline mode is off and the endpoint accepts a connection (offline mode:
    True too, so that the libraries' caches are read)."""
    if offline():
        return True
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False
