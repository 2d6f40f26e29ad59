"""Every table of the privacy domain, imported together by ``cloudphone.schema``."""

from __future__ import annotations

from cloudphone.privacy.audit import AuditEvent

__all__ = ["AuditEvent"]
