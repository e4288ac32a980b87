"""Access tokens: SMART backend services (client credentials + signed JWT assertion).

:class:`TokenSource` signs a fresh client assertion for every token request (a network
refuses a reused ``jti``, so even a retried request gets a new one), declares the
configured purpose of use, caches the token and replaces it ``token_refresh_margin_s``
before it expires. It does not speak HTTP itself: the network client hands it a
``fetch`` function, so token requests go through the same rate limiter, retry policy,
size cap and audit trail as every other call.

Neither the token nor the assertion ever appears in a log line, an exception message or
a ``repr``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ehrfetch.errors import ConfigError, InvalidResponse
from ehrfetch.settings import NetworkSettings

log = logging.getLogger("ehrfetch.network.auth")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
TokenFetch = Callable[[Callable[[], Mapping[str, str]]], Awaitable[Mapping[str, Any]]]
"""POSTs a token form and answers the token endpoint's JSON (the network client's).

It gets a form factory, not a form: each try of the request needs a fresh assertion.
"""


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    refresh_at: float
    """When to stop using it: its expiry less the refresh margin (the source's clock)."""
    purpose_of_use: str

    def __str__(self) -> str:
        return "AccessToken(***)"


def load_signing_key(settings: NetworkSettings) -> tuple[SigningKey, str]:
    """The client's private key from the settings and the JWS algorithm it signs with."""
    if settings.private_key is not None:
        pem = settings.private_key.get_secret_value().encode()
        where = "network.private_key"
    elif settings.private_key_file is not None:
        where = f"network.private_key_file ({settings.private_key_file})"
        try:
            pem = settings.private_key_file.read_bytes()
        except OSError as error:
            raise ConfigError(f"{where}: cannot read: {error.strerror}") from None
    else:
        raise ConfigError(
            "no client key: set network.private_key_file "
            "(or EHRFETCH__NETWORK__PRIVATE_KEY with the PEM)"
        )
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # The loader's message could quote the input; ours never does.
        raise ConfigError(f"{where}: not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGORITHMS:
        return key, _EC_ALGORITHMS[key.curve.name]
    raise ConfigError(f"{where}: only RSA and EC (P-256/384/521) keys can sign assertions")


class TokenSource:
    """One cached access token for the configured client and purpose of use.

    Safe to share between concurrent tasks of one event loop: a single refresh runs at
    a time and every waiter gets its result.
    """

    def __init__(
        self,
        settings: NetworkSettings,
        *,
        clock: Callable[[], float] = time.time,
        signing_key: tuple[SigningKey, str] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._key, self.algorithm = signing_key or load_signing_key(settings)
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.fetches = 0
        """Token requests made (each one with its retries counts once)."""

    @property
    def purpose_of_use(self) -> str:
        return self._settings.purpose_of_use

    def assertion(self) -> str:
        """A fresh signed client assertion (iss = sub = client id, aud = token URL)."""
        now = int(self._clock())
        claims = {
            "iss": self._settings.client_id,
            "sub": self._settings.client_id,
            "aud": self._settings.token_url,
            "iat": now,
            "exp": now + self._settings.assertion_lifetime_s,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self._settings.key_id} if self._settings.key_id else None
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def form(self) -> dict[str, str]:
        """The token request body, with a new assertion."""
        return {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(),
            "purpose_of_use": self._settings.purpose_of_use,
            "scope": self._settings.scope,
        }

    def _fresh(self, token: AccessToken | None) -> bool:
        return token is not None and self._clock() < token.refresh_at

    async def token(self, fetch: TokenFetch) -> AccessToken:
        """The cached token, or a new one when it is missing or about to expire."""
        if self._fresh(self._token):
            assert self._token is not None
            return self._token
        async with self._refresh_lock():
            # Another task may have refreshed while this one waited for the lock.
            if self._fresh(self._token):
                assert self._token is not None
                return self._token
            self.fetches += 1
            self._token = self._parse(await fetch(self.form))
            log.debug("new access token, purpose=%s", self._token.purpose_of_use)
            return self._token

    def _refresh_lock(self) -> asyncio.Lock:
        # A lock belongs to the event loop that first waits on it. A TokenSource may
        # outlive one loop (a CLI re-running batches, each under asyncio.run), and its
        # token stays good across them; its lock must not.
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def invalidate(self, stale: AccessToken | None = None) -> None:
        """Forget the cached token (only if it is still ``stale``, when given).

        Many calls can get a 401 with the same stale token; only the first one's
        invalidation should cost a token request, the others find the new one.
        """
        if stale is None or self._token is stale:
            self._token = None

    def _parse(self, answer: Mapping[str, Any]) -> AccessToken:
        value = answer.get("access_token")
        kind = answer.get("token_type", "Bearer")
        lifetime = answer.get("expires_in", 300)
        url = self._settings.token_url
        if not isinstance(value, str) or not value:
            raise InvalidResponse("token answer has no access_token", url=url)
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise InvalidResponse("token answer is not a Bearer token", url=url)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise InvalidResponse("token answer has no usable expires_in", url=url)
        # A token that lives shorter than twice the margin is used for half its life,
        # not refreshed on every call.
        margin = min(self._settings.token_refresh_margin_s, lifetime / 2)
        purpose = answer.get("purpose_of_use")
        return AccessToken(
            value=value,
            refresh_at=self._clock() + lifetime - margin,
            purpose_of_use=purpose if isinstance(purpose, str) else self.purpose_of_use,
        )
