"""RFC 9457 problem documents: the one shape every API error takes."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://cloudphone.dev/problems/"


class Problem(Exception):
    """An error the API reports as ``application/problem+json``.

    Domain code raises these (or subclasses); the web layer renders them. ``kind`` becomes the
    problem ``type`` URI, so clients can branch on it without parsing prose.
    """

    status: int = 400
    kind: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class NotFound(Problem):
    status, kind, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, kind, title = 409, "conflict", "Conflict"


class Unauthorized(Problem):
    status, kind, title = 401, "unauthorized", "Authentication required"


class Forbidden(Problem):
    status, kind, title = 403, "forbidden", "Forbidden"


class FeatureDisabled(Problem):
    """Promise P1: the account's configuration does not enable the feature."""

    status, kind, title = 403, "feature-disabled", "Feature disabled for this account"

    def __init__(self, feature: str) -> None:
        super().__init__(
            f"the feature '{feature}' is not enabled for this account; nothing was stored",
            feature=feature,
        )


class HttpsRequired(Problem):
    """Promise P3: account details only over HTTPS."""

    status, kind, title = 403, "https-required", "HTTPS required"


class InvalidInput(Problem):
    status, kind, title = 422, "invalid-input", "Invalid input"
