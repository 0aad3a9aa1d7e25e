"""Request and response bodies of the API (they are also what /openapi.json documents)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Key = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX, description="A signed 64-bit integer key.")]
Value = Annotated[float, Field(allow_inf_nan=False, description="A finite 64-bit float.")]


class _Strict(BaseModel):
    # Unknown fields are refused so a typo ("record", "val") is an error, not silently dropped data; strict
    # types so "1" or true is not taken for a key (the fast body parser applies the same rules).
    model_config = ConfigDict(extra="forbid", strict=True)


class Record(_Strict):
    key: Key
    value: Value


class MaybeRecord(BaseModel):
    key: Key
    value: float | None = Field(description="null when the key is absent.")


class UpsertRequest(_Strict):
    records: list[Record] = Field(description="Records to upsert, applied as one atomic, durable batch.")


class KeysRequest(_Strict):
    keys: list[Key]


class WriteResult(BaseModel):
    lsn: int = Field(description="Log sequence number of the committed batch.")
    count: int = Field(description="Records in the batch.")


class LookupResult(BaseModel):
    records: list[MaybeRecord] = Field(description="One entry per requested key, in request order.")


class RangePage(BaseModel):
    records: list[Record]
    next_cursor: str | None = Field(description="Pass as ?cursor= (with the same start/end) for the next "
                                                "page; null at the end of the range.")


class LoginRequest(_Strict):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(max_length=4096)


class LoginResult(BaseModel):
    token: str
    token_type: str = "Bearer"
    expires_in: int


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Status(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}
