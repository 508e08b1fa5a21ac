"""Authentication: signed JWT bearer tokens with SMART-on-FHIR v2 scopes and patient context.

A token is a JWT signed with HS256 (shared secret) or RS256/ES256 (the server holds only
public keys). Claims read: ``sub`` (who), ``scope`` (space-separated SMART scopes, or ``scp``
as a list), ``patient`` (patient context: the token is confined to that patient's
compartment), ``role`` (limits functions and fields), ``client_id``/``azp``, ``exp``
(required), ``iss``/``aud`` (checked when configured).

Scopes (SMART App Launch v2 and v1): ``patient/Observation.rs``, ``user/*.cruds``,
``system/*.rs``, ``patient/*.read`` (v1 = ``rs``), ``user/*.write`` (v1 = ``cud``),
``user/*.*`` (= ``cruds``). A ``patient/`` scope needs a ``patient`` claim.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt

from healthtwin.serve.settings import Settings

_SCOPE = re.compile(
    r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\."
    r"(\*|read|write|c?r?u?d?s?)(?:\?[^ ]*)?$"
)
OPS = "cruds"


class Role(StrEnum):
    """What kind of person or system holds the token (limits functions and fields)."""

    PATIENT = "patient"
    CLINICIAN = "clinician"
    OPERATIONS = "operations"
    RESEARCHER = "researcher"
    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Scope:
    context: str  # patient | user | system
    rtype: str  # "*" or a FHIR resource type
    perms: frozenset[str]  # subset of c r u d s

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """A SMART scope, or None for scopes that grant no data access (openid, launch...)."""
        m = _SCOPE.match(text)
        if not m:
            return None
        ctx, rtype, p = m.groups()
        if p == "*":
            perms = OPS
        elif p == "read":
            perms = "rs"
        elif p == "write":
            perms = "cud"
        else:
            perms = p
        if not perms:
            return None
        return cls(ctx, rtype, frozenset(perms))


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``patient`` ("Patient/<id>") confines it to one compartment."""

    sub: str
    scopes: tuple[Scope, ...]
    patient: str | None
    role: Role
    client_id: str | None = None
    expires: float | None = None

    def allows(self, rtype: str, op: str) -> bool:
        """Does some scope grant operation ``op`` (one of c r u d s) on ``rtype``?"""
        for s in self.scopes:
            if s.context == "patient" and self.patient is None:
                continue
            if (s.rtype == "*" or s.rtype == rtype) and op in s.perms:
                return True
        return False

    def has_context(self, context: str) -> bool:
        return any(s.context == context for s in self.scopes)

    @property
    def scope_text(self) -> str:
        return " ".join(
            f"{s.context}/{s.rtype}.{''.join(c for c in OPS if c in s.perms)}" for s in self.scopes
        )


class AuthError(Exception):
    """Authentication failed (401): missing, malformed, expired or badly signed token."""


def _patient_ref(value: Any) -> str | None:
    if value is None or value == "":
        return None
    v = str(value)
    return v if v.startswith("Patient/") else f"Patient/{v}"


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Build a principal from verified claims; unknown roles are refused."""
    raw = claims.get("scope", claims.get("scp", ""))
    items = raw.split() if isinstance(raw, str) else [str(x) for x in raw or []]
    scopes = tuple(s for s in (Scope.parse(x) for x in items) if s is not None)
    patient = _patient_ref(claims.get("patient"))
    role_claim = claims.get("role")
    if role_claim is None:
        role = (
            Role.PATIENT if patient else (Role.SERVICE if _only_system(scopes) else Role.CLINICIAN)
        )
    else:
        try:
            role = Role(str(role_claim))
        except ValueError:
            raise AuthError(
                f"token role {role_claim!r} is not one of {[r.value for r in Role]}"
            ) from None
    sub = claims.get("sub")
    if not sub:
        raise AuthError("token has no 'sub' claim")
    return Principal(
        sub=str(sub),
        scopes=scopes,
        patient=patient,
        role=role,
        client_id=claims.get("client_id") or claims.get("azp"),
        expires=float(claims["exp"]) if "exp" in claims else None,
    )


def _only_system(scopes: tuple[Scope, ...]) -> bool:
    return bool(scopes) and all(s.context == "system" for s in scopes)


class TokenVerifier:
    """Verify bearer tokens against the configured keys (cached per token until expiry)."""

    def __init__(self, settings: Settings, cache_size: int = 4096) -> None:
        self.settings = settings
        self._keys: list[tuple[Any, list[str]]] = []
        if settings.jwt_secret is not None:
            self._keys.append((settings.jwt_secret.encode(), ["HS256"]))
        for pem in settings.jwt_public_keys:
            self._keys.append((pem.encode(), ["RS256", "ES256"]))
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str) -> Principal:
        hit = self._cache.get(token)
        if hit is not None and (hit.expires is None or hit.expires > time.time()):
            self._cache.move_to_end(token)
            return hit
        if not self._keys:
            raise AuthError("the server has no token key configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from None
        alg = header.get("alg")
        last: Exception | None = None
        for key, algs in self._keys:
            if alg not in algs:
                continue
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=algs,
                    audience=self.settings.audience,
                    issuer=self.settings.issuer,
                    leeway=self.settings.leeway_s,
                    options={
                        "require": ["exp", "sub"],
                        "verify_aud": self.settings.audience is not None,
                    },
                )
            except jwt.InvalidSignatureError as exc:
                last = exc
                continue
            except jwt.PyJWTError as exc:
                raise AuthError(f"invalid token: {exc}") from None
            p = principal_from_claims(claims)
            self._cache[token] = p
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return p
        if last is None:
            raise AuthError(f"token algorithm {alg!r} is not accepted by this server")
        raise AuthError("token signature does not match any configured key")


def mint_token(
    key: str | bytes,
    *,
    sub: str,
    scope: str,
    patient: str | None = None,
    role: str | None = None,
    alg: str = "HS256",
    ttl_s: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    client_id: str | None = None,
) -> str:
    """Sign a token (HS256 with a secret; RS256/ES256 with a PEM private key)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "scope": scope, "iat": now, "exp": now + ttl_s}
    if patient:
        claims["patient"] = patient.removeprefix("Patient/")
    if role:
        claims["role"] = role
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    if client_id:
        claims["client_id"] = client_id
    k = key.encode() if isinstance(key, str) and alg == "HS256" else key
    return jwt.encode(claims, k, algorithm=alg)
