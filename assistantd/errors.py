"""Domain errors. Lower layers raise these; ``api/errors.py`` turns them into the OpenAI envelope.

Each carries what the envelope needs (``type``, ``code``, ``param``) and a message a user can act on.
"""

from __future__ import annotations


class APIError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(APIError):
    """The request is malformed or breaks a rule of the API (400)."""

    status = 400
    type = "invalid_request_error"


class NotFound(APIError):
    """The object does not exist, or belongs to another project (404)."""

    status = 404
    type = "invalid_request_error"

    @classmethod
    def object(cls, kind: str, object_id: str) -> NotFound:
        return cls(f"No {kind} found with id '{object_id}'.")


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ServiceUnavailable(APIError):
    status = 503
    type = "server_error"
