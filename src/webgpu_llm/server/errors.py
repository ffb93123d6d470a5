"""Errors as the OpenAI API gives them: `{"error": {"message", "type", "param", "code"}}` with
the HTTP status that says whose fault it is."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

# status: the error's "type"
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
         500: "server_error", 503: "unavailable_error"}


class ApiError(Exception):
    """A request that gets an error answer (raised anywhere in a handler)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def from_validation(e: ValidationError) -> ApiError:
    """The first problem pydantic found, in one line naming the field (`messages.0.content`)."""
    err = e.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({err.get('ctx', {}).get('error', err['msg'])})",
                        code="invalid_json")
    loc = [str(p) for p in err["loc"]]
    if not loc:  # the body as a whole
        return ApiError(400, "the request body must be a JSON object", code="invalid_body")
    param = ".".join(loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required"
    elif err["type"].startswith("literal_error"):
        msg = f"must be one of {err.get('ctx', {}).get('expected', '')}"
    return ApiError(400, f"{param}: {msg}", param=param)
