"""Every table of the privacy domain, imported together by ``cloudphone.schema``."""

from __future__ import annotations

from cloudphone.privacy.audit import AuditEvent
from cloudphone.privacy.disclosures import Disclosure
from cloudphone.privacy.exports import SubjectExport
from cloudphone.privacy.holds import LegalHold
from cloudphone.privacy.notices import Notice, PolicyVersion
from cloudphone.privacy.requests import PostMortemDirective, SubjectRequest
from cloudphone.privacy.sealing import SubjectKey

__all__ = [
    "AuditEvent",
    "Disclosure",
    "LegalHold",
    "Notice",
    "PolicyVersion",
    "PostMortemDirective",
    "SubjectExport",
    "SubjectKey",
    "SubjectRequest",
]
