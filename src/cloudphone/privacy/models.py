"""Every table of the privacy domain, imported together by ``cloudphone.schema``."""

from __future__ import annotations

from cloudphone.privacy.audit import AuditEvent
from cloudphone.privacy.sealing import SubjectKey

__all__ = ["AuditEvent", "SubjectKey"]
