"""One DataHub request as the routes see it (its JSON body or its protobuf frame), the protobuf frame of an answer,
and the errors every route shares."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import crcmod.predefined
import orjson

from obflow_dev.emulator.store import (
    DataHubError,
    invalid,
)

PB_MAGIC = b"DHUB"
_CRC32C = crcmod.predefined.mkCrcFun("crc-32c")


@dataclass
class Request:
    method: str
    path: str
    body: bytes
    pb: bool
    headers: dict[str, str]
    """Request headers, names in lower case."""

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, parsed once however often it is asked for."""
        return self._json

    @cached_property
    def _json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise invalid("request body must be a JSON object")
        return data

    def pb_message(self) -> bytes:
        if len(self.body) < 12 or self.body[:4] != PB_MAGIC:
            raise invalid("protobuf body must start with the DHUB frame header")
        length = struct.unpack(">I", self.body[8:12])[0]
        payload = self.body[12:]
        if length != len(payload):
            raise invalid(f"protobuf frame says {length} bytes, body has {len(payload)}")
        crc = struct.unpack(">I", self.body[4:8])[0]
        if crc != crc32c(payload):
            raise invalid("protobuf frame checksum does not match")
        return payload

    def action(self) -> str:
        header = self.headers.get("x-datahub-request-action")
        if self.pb or header:
            return str(header or "")
        return str(self.json().get("Action", ""))


def bad_method(req: Request) -> DataHubError:
    return DataHubError(400, "InvalidUriSpec", f"{req.method} is not supported on {req.path}")


def unsupported(action: str, req: Request) -> DataHubError:
    return DataHubError(400, "InvalidOperation", f"action {action!r} on {req.path} is not supported by the emulator")


def whole(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    """``body[key]`` as a whole number from ``low`` to ``high`` (``default`` when absent or null), else
    InvalidParameter naming it."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # the SDK sends some counts as JSON text
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{key} must be a whole number from {low} to {high}, not {value!r:.40}")
    return value


def pb_frame(payload: bytes) -> bytes:
    return PB_MAGIC + struct.pack(">I", crc32c(payload)) + struct.pack(">I", len(payload)) + payload


def crc32c(data: bytes) -> int:
    return int(_CRC32C(data)) & 0xFFFFFFFF
