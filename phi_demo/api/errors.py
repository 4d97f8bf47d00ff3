"""Errors in the shape OpenAI's clients read: `{"error": {"message", "type", "param", "code"}}`,
with the sentences the page shows."""

from __future__ import annotations

from typing import Any

from phi_demo.errors import UserInputError

# What the HTTP status says, as OpenAI names it.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 503: "server_error"}


class ApiError(Exception):
    """One refused request: the HTTP status, and the sentence a person reads."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    @classmethod
    def bad_input(cls, error: UserInputError, param: str | None = None) -> ApiError:
        return cls(400, str(error), param=param)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
