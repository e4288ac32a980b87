"""The token endpoint and bearer-token checks: SMART backend services / UDAP B2B.

A client POSTs `grant_type=client_credentials` with a JWT client assertion signed by its
private key (RS256/RS384/ES256/ES384), `iss` = `sub` = its client id, `aud` = the token
URL, a unique `jti` and at most five minutes between `iat` and `exp`. It declares one
purpose of use, in any of three places (they must agree when several are used):

* the form field `purpose_of_use=T-IAS`,
* a scope token `purpose_of_use/T-IAS` inside `scope`,
* the UDAP B2B assertion extension `extensions.hl7-b2b.purpose_of_use` (a list with one
  code, bare or as `urn:oid:2.16.840.1.113883.5.8#CODE`).

The access token it gets is opaque, bound to that client and purpose, and expires.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mock_network.config import ClientConfig, NetworkConfig

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
DEFAULT_SCOPE = "system/Patient.read system/DocumentReference.read system/Binary.read"
_PURPOSE_SCOPE = "purpose_of_use/"


class AuthError(Exception):
    """Refused: `status` 400/401/403, `code` an OAuth error code, `message` for humans (never
    carries the assertion or the token)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Grant:
    client_id: str
    purpose: str
    scopes: frozenset[str]
    expires_at: float

    def allows(self, resource_type: str) -> bool:
        accepted = {
            f"system/{resource_type}.read",
            f"system/{resource_type}.rs",
            f"system/{resource_type}.*",
            "system/*.read",
            "system/*.rs",
            "system/*.*",
        }
        return bool(self.scopes & accepted)


class KeyStore:
    """Public keys of registered clients; key files are re-read when they change."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[float, list[Any]]] = {}

    def keys_for(self, client: ClientConfig) -> list[Any]:
        if client.public_key_pem is not None:
            return [_load_pem(client.public_key_pem.encode())]
        path = client.public_key_file or client.jwks_file
        assert path is not None  # the config validator guarantees one source
        try:
            mtime = path.stat().st_mtime
        except OSError as error:
            raise AuthError(
                401, "invalid_client", "the client's registered key is unavailable"
            ) from error
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        data = path.read_bytes()
        keys = [_load_pem(data)] if client.public_key_file is not None else _load_jwks(data)
        self._cache[path] = (mtime, keys)
        return keys


def _load_pem(data: bytes) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(data)


def _load_jwks(data: bytes) -> list[Any]:
    keys: list[Any] = []
    for jwk in json.loads(data).get("keys", []):
        if jwk.get("kty") == "RSA":
            keys.append(RSAAlgorithm.from_jwk(jwk))
        elif jwk.get("kty") == "EC":
            keys.append(ECAlgorithm.from_jwk(jwk))
    return keys


def _purpose_code(value: str) -> str:
    return value.rsplit("#", 1)[-1].strip()


class Authority:
    def __init__(self, config: NetworkConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.keys = KeyStore()
        self._tokens: dict[str, Grant] = {}
        self._seen_jti: dict[tuple[str, str], float] = {}

    def issue(self, form: Mapping[str, str], token_url: str) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise AuthError(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AuthError(
                400, "invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}"
            )
        assertion = form.get("client_assertion")
        if not assertion:
            raise AuthError(400, "invalid_request", "client_assertion is missing")
        client = self._client_of(assertion)
        if form.get("client_id") not in (None, client.client_id):
            raise AuthError(401, "invalid_client", "client_id does not match the assertion's iss")
        claims = self._verify(assertion, client, token_url)
        now = self.clock()
        self._remember_jti(client.client_id, claims, now)
        purpose = self._purpose(form, claims)
        if purpose not in self.config.auth.purposes:
            raise AuthError(
                403, "invalid_scope", f"purpose of use {purpose!r} is unknown to the network"
            )
        if purpose not in client.allowed_purposes:
            raise AuthError(
                403, "invalid_scope", f"purpose of use {purpose!r} is not allowed for this client"
            )
        scopes = self._scopes(form.get("scope", ""))
        self._purge(now)
        token = secrets.token_urlsafe(32)
        lifetime = self.config.auth.token_lifetime_s
        self._tokens[token] = Grant(client.client_id, purpose, scopes, now + lifetime)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(sorted(scopes)),
            "purpose_of_use": purpose,
        }

    def check(self, authorization: str | None) -> Grant:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError(401, "invalid_token", "a bearer token is required")
        grant = self._tokens.get(authorization[7:].strip())
        if grant is None:
            raise AuthError(401, "invalid_token", "unknown access token")
        if grant.expires_at <= self.clock():
            raise AuthError(401, "invalid_token", "the access token has expired")
        return grant

    # -- pieces ---------------------------------------------------------------------

    def _client_of(self, assertion: str) -> ClientConfig:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise AuthError(401, "invalid_client", "client_assertion is not a JWT") from error
        issuer = unverified.get("iss")
        client = self.config.client(issuer) if isinstance(issuer, str) else None
        if client is None:
            raise AuthError(401, "invalid_client", "unknown client")
        if unverified.get("sub") != issuer:
            raise AuthError(401, "invalid_client", "assertion sub must equal iss (the client id)")
        return client

    def _verify(self, assertion: str, client: ClientConfig, token_url: str) -> dict[str, Any]:
        auth = self.config.auth
        audiences = [token_url]
        if self.config.public_base_url:
            audiences.append(self.config.public_base_url.rstrip("/") + "/token")
        last: Exception | None = None
        for key in self.keys.keys_for(client):
            try:
                claims: dict[str, Any] = jwt.decode(
                    assertion,
                    key,
                    algorithms=list(ALGORITHMS),
                    audience=audiences,
                    issuer=client.client_id,
                    leeway=auth.leeway_s,
                    options={"require": ["exp", "iat", "jti", "iss", "sub", "aud"]},
                )
            except jwt.ExpiredSignatureError as error:
                raise AuthError(401, "invalid_client", "client_assertion has expired") from error
            except jwt.InvalidAudienceError as error:
                raise AuthError(
                    401, "invalid_client", "client_assertion aud must be the token URL"
                ) from error
            except jwt.MissingRequiredClaimError as error:
                raise AuthError(
                    401, "invalid_client", f"client_assertion lacks {error.claim}"
                ) from error
            except jwt.InvalidSignatureError as error:
                last = error
                continue
            except jwt.PyJWTError as error:
                raise AuthError(
                    401, "invalid_client", f"client_assertion refused: {error}"
                ) from error
            lifetime = float(claims["exp"]) - float(claims["iat"])
            if lifetime > auth.max_assertion_lifetime_s:
                raise AuthError(
                    401,
                    "invalid_client",
                    f"client_assertion lifetime exceeds {auth.max_assertion_lifetime_s} s",
                )
            return claims
        raise AuthError(
            401, "invalid_client", "client_assertion signature does not verify"
        ) from last

    def _remember_jti(self, client_id: str, claims: Mapping[str, Any], now: float) -> None:
        key = (client_id, str(claims["jti"]))
        if key in self._seen_jti:
            raise AuthError(401, "invalid_client", "client_assertion jti was already used")
        # Kept until the assertion could no longer be accepted anyway.
        self._seen_jti[key] = float(claims["exp"]) + self.config.auth.leeway_s

    def _purpose(self, form: Mapping[str, str], claims: Mapping[str, Any]) -> str:
        found: set[str] = set()
        if form.get("purpose_of_use"):
            found.add(_purpose_code(form["purpose_of_use"]))
        for scope in form.get("scope", "").split():
            if scope.startswith(_PURPOSE_SCOPE):
                found.add(_purpose_code(scope[len(_PURPOSE_SCOPE) :]))
        b2b = (
            (claims.get("extensions") or {}).get("hl7-b2b")
            if isinstance(claims.get("extensions"), Mapping)
            else None
        )
        if isinstance(b2b, Mapping):
            for value in b2b.get("purpose_of_use") or []:
                if isinstance(value, str):
                    found.add(_purpose_code(value))
        if not found:
            raise AuthError(400, "invalid_request", "declare a purpose of use (purpose_of_use)")
        if len(found) > 1:
            raise AuthError(400, "invalid_request", "one purpose of use per token")
        return found.pop()

    @staticmethod
    def _scopes(scope: str) -> frozenset[str]:
        requested = {s for s in scope.split() if not s.startswith(_PURPOSE_SCOPE)}
        if not requested:
            return frozenset(DEFAULT_SCOPE.split())
        refused = [s for s in requested if not s.startswith("system/")]
        if refused:
            raise AuthError(
                400, "invalid_scope", "only system/ scopes are granted to backend clients"
            )
        return frozenset(requested)

    def _purge(self, now: float) -> None:
        # Bounded memory in a long benchmark: drop what can no longer be used.
        if len(self._tokens) > 10_000:
            self._tokens = {t: g for t, g in self._tokens.items() if g.expires_at > now}
        if len(self._seen_jti) > 10_000:
            self._seen_jti = {k: exp for k, exp in self._seen_jti.items() if exp > now}
