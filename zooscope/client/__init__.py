"""A Python client for a running zooscope service, over its public HTTP API only.

    from zooscope.client import ZooscopeClient
    with ZooscopeClient("http://127.0.0.1:8000", key="...") as zs:
        ckpt = zs.upload("model.safetensors")
        job = zs.submit("reconstruct", {"checkpoint_ids": [ckpt["id"]]})
        zs.wait(job["id"])
        print(zs.report(job["id"])["aggregate"])

Only httpx is needed: the client imports nothing of the service (no fastapi, sqlalchemy, celery).
"""

from zooscope.client.errors import (
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    TransportError,
)
from zooscope.client.http import API_PREFIX, TERMINAL_STATES, ZooscopeClient

__all__ = [
    "API_PREFIX",
    "TERMINAL_STATES",
    "ClientConnectionError",
    "ClientError",
    "ClientTimeoutError",
    "TransportError",
    "ZooscopeClient",
]
