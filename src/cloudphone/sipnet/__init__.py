"""asyncio adapter for :mod:`cloudphone.sip`: UDP/TCP/TLS transports, flows, one timer heap,
RFC 3263 resolution, an endpoint, a registration runner and a small stateful proxy.

The pure core never imports this package.
"""

from cloudphone.sipnet.endpoint import (
    Endpoint,
    IncomingRequest,
    TransactionFailed,
    new_branch,
    new_tag,
)
from cloudphone.sipnet.registration import RegistrationRunner
from cloudphone.sipnet.resolver import Resolver, Target
from cloudphone.sipnet.scheduler import Scheduler
from cloudphone.sipnet.transport import Flow, FlowTable, client_ssl_context

__all__ = [
    "Endpoint",
    "Flow",
    "FlowTable",
    "IncomingRequest",
    "RegistrationRunner",
    "Resolver",
    "Scheduler",
    "Target",
    "TransactionFailed",
    "client_ssl_context",
    "new_branch",
    "new_tag",
]
