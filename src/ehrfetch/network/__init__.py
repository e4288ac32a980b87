"""The network client: the only part of ehrfetch that speaks HTTP to the network.

    async with NetworkClient(settings.network, TokenSource(settings.network),
                             on_call=audit.append) as network:
        for org in await network.directory():
            candidates = await network.match(org, patient, research_id=rid)
            async for doc in network.documents(org, candidates[0].network_patient_id, rid):
                for ref in doc.attachments:
                    fetched = await network.fetch_attachment(org, ref, rid)
                    verify(fetched)  # DocumentMismatch when size or SHA-1 differ

Modules: ``model`` (the values handed back), ``client`` (the calls), ``auth`` (tokens),
``retry`` (the tenacity policy), ``ratelimit`` (pacing per organization), ``transport``
(the httpx client and the size cap), ``directory`` (the directory Bundle). Failures are
``ehrfetch.errors.NetworkError`` subclasses, each with a stable ``code``.
"""

from ehrfetch.network.auth import AccessToken, TokenSource, load_signing_key
from ehrfetch.network.client import NetworkClient, OnCall, verify
from ehrfetch.network.directory import parse_directory
from ehrfetch.network.model import (
    AttachmentRef,
    CallRecord,
    DocumentRefEntry,
    FetchedAttachment,
    MatchCandidate,
    Operation,
    Organization,
    OrgMatch,
)
from ehrfetch.network.ratelimit import RateLimiters, TokenBucket
from ehrfetch.network.retry import RETRY_STATUSES, build_policy, parse_retry_after
from ehrfetch.network.transport import build_client, read_capped

__all__ = [
    "RETRY_STATUSES",
    "AccessToken",
    "AttachmentRef",
    "CallRecord",
    "DocumentRefEntry",
    "FetchedAttachment",
    "MatchCandidate",
    "NetworkClient",
    "OnCall",
    "Operation",
    "OrgMatch",
    "Organization",
    "RateLimiters",
    "TokenBucket",
    "TokenSource",
    "build_client",
    "build_policy",
    "load_signing_key",
    "parse_directory",
    "parse_retry_after",
    "read_capped",
    "verify",
]
