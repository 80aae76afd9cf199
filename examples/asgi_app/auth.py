"""Passwords (argon2id), access tokens (JWT, HS256) and the route dependencies that check them.

The request middleware reads the bearer token (or the ``lq_access`` HttpOnly cookie)
once and leaves a :class:`Principal` or the reason it has none in ``request.state``;
the dependencies here turn that into 401/403 and set the row-level-security identity.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

import argon2
import attrs
import jwt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from asgi_app.database import ADMIN, set_identity
from asgi_app.envelope import ApiError
from lumenquest_adapters.sqlalchemy import Identity

__all__ = [
    "ACCESS_COOKIE",
    "REFRESH_COOKIE",
    "AdminUser",
    "CurrentUser",
    "MaybeUser",
    "Passwords",
    "Principal",
    "TokenIssuer",
    "new_refresh_token",
]

ACCESS_COOKIE = "lq_access"
REFRESH_COOKIE = "lq_refresh"
_ALGORITHM = "HS256"


@attrs.frozen
class Principal:
    """The signed-in customer a request acts for."""

    id: str
    role: str

    @property
    def is_admin(self) -> bool:
        """Whether the principal has the admin role."""
        return self.role == "admin"

    @property
    def actor(self) -> str:
        """Return the audit-log name of this principal."""
        return f"{self.role}:{self.id}"


class Passwords:
    """argon2id hashing with a constant-time answer for unknown users."""

    def __init__(self, *, time_cost: int, memory_kib: int) -> None:
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        # Verified against when the email is unknown, so that timing does not tell.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        """Return the argon2id hash of ``password``."""
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored`` (None: an unknown user, always False)."""
        try:
            matched = self._hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matched and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters than today's."""
        return self._hasher.check_needs_rehash(stored)


# Tokens whose signature and claims were checked, with what they carry: a client sends
# the same token on every request, and verifying it costs more than the rest of the
# middleware. Bounded; expiry is still checked on every use.
_VERIFIED_TOKENS = 4096


class TokenIssuer:
    """Sign and check access tokens against the billing clock (so tests can move time)."""

    def __init__(self, key: str, lifetime: timedelta) -> None:
        self._key = key
        self.lifetime = lifetime
        self._verified: dict[str, tuple[Principal, int]] = {}

    def issue(self, principal: Principal, at: datetime) -> str:
        """Return an access token for ``principal`` valid for ``lifetime`` from ``at``."""
        claims = {
            "sub": principal.id,
            "role": principal.role,
            "typ": "access",
            "iat": int(at.timestamp()),
            "exp": int((at + self.lifetime).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def check(self, token: str, at: datetime) -> Principal | str:
        """Return the token's principal, or why it is refused (``invalid`` or ``expired``)."""
        verified = self._verified.get(token)
        if verified is None:
            checked = self._verify(token)
            if isinstance(checked, str):
                return checked
            if len(self._verified) >= _VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[token] = verified = checked
        principal, expires = verified
        if expires <= at.timestamp():
            return "expired"
        return principal

    def _verify(self, token: str) -> tuple[Principal, int] | str:
        """Check the signature and the claims (not the expiry); return principal and ``exp``."""
        try:
            # Expiry is checked below against the billing clock, not the wall clock.
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"verify_exp": False, "require": ["sub", "exp", "role", "typ"]},
            )
        except jwt.PyJWTError:
            return "invalid"
        if claims.get("typ") != "access" or claims.get("role") not in ("user", "admin"):
            return "invalid"
        if not isinstance(claims["exp"], int):
            return "expired"
        return Principal(id=str(claims["sub"]), role=str(claims["role"])), claims["exp"]


def new_refresh_token() -> str:
    """Return a fresh opaque refresh token (256 random bits)."""
    return secrets.token_urlsafe(32)


def _unauthenticated(reason: str) -> ApiError:
    messages = {
        "missing": "sign in: this route needs an access token",
        "invalid": "the access token is not valid",
        "expired": "the access token has expired; refresh it",
    }
    return ApiError(
        401,
        "UNAUTHENTICATED",
        messages.get(reason, messages["invalid"]),
        details={"reason": reason},
        headers={"WWW-Authenticate": 'Bearer realm="lumenquest"'},
    )


class _DocumentedBearer(HTTPBearer):
    """Bearer auth as the OpenAPI schema (and /docs' Authorize button) shows it.

    The request middleware has already read the token (header or cookie) once; parsing
    the header again here, into a model nobody reads, is work on every signed-in request.
    Each subclass is the route's whole auth dependency: the principal check is its
    ``__call__``, not a dependency of its own on a documenting one (FastAPI solves each
    dependency level at a cost: a signed-in request spends one level fewer).

    ``async``: it runs in the request's own context, so the identity it sets reaches the
    (threaded) route body, which runs in a copy of that context.
    """

    def __init__(self) -> None:
        super().__init__(
            scheme_name="HTTPBearer",
            auto_error=False,
            description="an access token from /v1/auth/login",
        )


def _signed_in(request: Request) -> Principal:
    """Return the principal the middleware found, or raise the 401 saying why there is none."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise _unauthenticated(getattr(request.state, "auth_error", "missing"))
    return principal  # type: ignore[no-any-return]


class _CurrentUser(_DocumentedBearer):
    """The signed-in customer, or 401; acts for it under row-level security."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = _signed_in(request)
        set_identity(Identity("user", principal.id))
        return principal


class _MaybeUser(_DocumentedBearer):
    """The signed-in customer, if any (acting for it), else None."""

    async def __call__(self, request: Request) -> Principal | None:  # type: ignore[override]
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is not None:
            set_identity(Identity("user", principal.id))
        return principal


class _Admin(_DocumentedBearer):
    """The signed-in administrator, 401 or 403 otherwise; acts as ``admin``."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = _signed_in(request)
        if not principal.is_admin:
            raise ApiError(403, "FORBIDDEN", "this route is for administrators")
        set_identity(ADMIN)
        return principal


CurrentUser = Annotated[Principal, Depends(_CurrentUser())]
MaybeUser = Annotated[Principal | None, Depends(_MaybeUser())]
AdminUser = Annotated[Principal, Depends(_Admin())]
