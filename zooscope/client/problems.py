"""Turns an error response into a ClientError, whatever shape its body has.

The API answers application/problem+json (RFC 9457), but a proxy in front of it, or a framework
default, may answer plain text or FastAPI's {"detail": ...}; all of them become one ClientError.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from zooscope.client.errors import ClientError


def _detail_text(detail: Any) -> str:
    """FastAPI's validation errors put a list of {loc, msg} in detail: flatten it for people."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return "" if detail is None else json.dumps(detail)


def error_from_response(response: httpx.Response) -> ClientError:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return ClientError(
            status=int(body.get("status") or response.status_code),
            title=str(body.get("title") or response.reason_phrase),
            detail=_detail_text(body.get("detail")),
            type_=str(body.get("type") or "about:blank"),
            body=body,
        )
    text = response.text.strip()[:500]  # a proxy's HTML error page would otherwise flood the terminal
    return ClientError(response.status_code, response.reason_phrase, text, body=text)
