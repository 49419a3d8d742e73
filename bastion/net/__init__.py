"""The one door out: every fetch of a URL someone else supplied goes through ``SafeFetcher``.

``addresses`` (pure) decides which hosts and addresses are reachable; ``policy`` holds the
rules and the URL check; ``resolver`` and ``backend`` resolve once and connect to the checked
address; ``transport`` applies all of it below httpx; ``fetcher`` is the facade.
"""

from bastion.net.addresses import classify_host, forbidden_reason, is_forbidden_address
from bastion.net.fetcher import FetchResult, SafeFetcher, parse_json_object
from bastion.net.policy import FetchError, FetchPolicy, FetchReason
from bastion.net.resolver import Resolver, system_resolver
from bastion.net.transport import SafeTransport

__all__ = [
    "FetchError",
    "FetchPolicy",
    "FetchReason",
    "FetchResult",
    "Resolver",
    "SafeFetcher",
    "SafeTransport",
    "classify_host",
    "forbidden_reason",
    "is_forbidden_address",
    "parse_json_object",
    "system_resolver",
]
