"""Register, log in, refresh (rotating, reuse revokes the family) and log out."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.responses import Response

from asgi_app.auth import ACCESS_COOKIE, REFRESH_COOKIE, Principal, new_refresh_token
from asgi_app.context import AppContext, Ctx
from asgi_app.database import SYSTEM, Credential, acting
from asgi_app.envelope import ApiError, Envelope, ok
from asgi_app.schemas import IdempotencyKey, LoginBody, RefreshBody, RegisterBody
from lumenquest_core.errors import Conflict, NotFound

__all__ = ["router"]

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def _conflict_email() -> ApiError:
    return ApiError(
        409, "CONFLICT", "an account with this email exists", details={"field": "email"}
    )


def _tokens(
    ctx: AppContext, principal: Principal, family_id: str, *, cookie: bool, secure: bool
) -> Response:
    """Issue an access token and a refresh token in ``family_id``, as JSON or cookies."""
    at = ctx.billing.clock.now()
    access = ctx.tokens.issue(principal, at)
    refresh = new_refresh_token()
    lifetime = timedelta(days=ctx.app_settings.refresh_token_days)
    ctx.database.auth.add_refresh_token(
        refresh, family_id=family_id, customer_id=principal.id, at=at, expires_at=at + lifetime
    )
    expires_in = int(ctx.tokens.lifetime.total_seconds())
    data: dict[str, Any] = {
        "token_type": "Bearer",
        "expires_in": expires_in,
        "user": {"id": principal.id, "role": principal.role},
    }
    if not cookie:
        data |= {"access_token": access, "refresh_token": refresh}
        return ok(data, "signed in")
    # Web clients: the tokens never reach JavaScript; SameSite=Strict stands in for CSRF tokens.
    response = ok(data | {"cookie": True}, "signed in")
    response.set_cookie(
        ACCESS_COOKIE, access, max_age=expires_in, httponly=True, secure=secure, samesite="strict"
    )
    response.set_cookie(
        REFRESH_COOKIE,
        refresh,
        max_age=int(lifetime.total_seconds()),
        path="/v1/auth",
        httponly=True,
        secure=secure,
        samesite="strict",
    )
    return response


def _secure(ctx: AppContext, request: Request) -> bool:
    return ctx.app_settings.behind_tls or request.url.scheme == "https"


@router.post("/register", status_code=201, response_model=Envelope, summary="Create an account")
def register(
    body: RegisterBody, ctx: Ctx, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """Create a customer with a password (argon2id) and sign it in."""
    with acting(SYSTEM):
        if ctx.database.auth.credential_by_email(body.email) is not None:
            raise _conflict_email()
        try:
            customer = ctx.run(
                "create_customer",
                lambda: ctx.billing.create_customer(
                    email=body.email, name=body.name, idempotency_key=idempotency_key
                ),
            )
        except Conflict:
            raise _conflict_email() from None
        credential = Credential(customer.id, customer.email, ctx.passwords.hash(body.password))
        try:
            ctx.database.auth.add_credential(credential, ctx.billing.clock.now())
        except sa.exc.IntegrityError:
            raise _conflict_email() from None  # a concurrent registration won
    principal = Principal(customer.id, customer.role.value)
    response = _tokens(ctx, principal, uuid.uuid4().hex, cookie=False, secure=_secure(ctx, request))
    response.status_code = 201
    return response


@router.post("/login", response_model=Envelope, summary="Sign in")
def login(body: LoginBody, ctx: Ctx, request: Request) -> Response:
    """Exchange an email and password for an access token (1 hour) and a refresh token."""
    credential = ctx.database.auth.credential_by_email(body.email)
    # Verified even for an unknown email, so that response time does not reveal accounts.
    if not ctx.passwords.verify(credential.password_hash if credential else None, body.password):
        raise ApiError(401, "INVALID_CREDENTIALS", "the email or password is not right")
    assert credential is not None
    if ctx.passwords.needs_rehash(credential.password_hash):
        ctx.database.auth.update_credential(
            credential.customer_id, password_hash=ctx.passwords.hash(body.password)
        )
    with acting(SYSTEM):
        customer = ctx.billing.get_customer(credential.customer_id)
    principal = Principal(customer.id, customer.role.value)
    return _tokens(
        ctx, principal, uuid.uuid4().hex, cookie=body.cookie, secure=_secure(ctx, request)
    )


def _refresh_token(request: Request, body: RefreshBody | None) -> str:
    token = (body.refresh_token if body else None) or request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            "send refresh_token in the body or the lq_refresh cookie",
            details={"fields": [{"field": "refresh_token", "reason": "missing"}]},
        )
    return token


@router.post("/refresh", response_model=Envelope, summary="Rotate the refresh token")
def refresh(ctx: Ctx, request: Request, body: RefreshBody | None = None) -> Response:
    """Spend a refresh token for a new pair; presenting a spent one revokes the whole family."""
    token = _refresh_token(request, body)
    at = ctx.billing.clock.now()
    outcome = ctx.database.auth.use_refresh_token(token, at)
    if outcome.status == "reused":
        ctx.logger.warning(
            "refresh token reuse: family revoked",
            user_id=outcome.customer_id,
            family_id=outcome.family_id,
        )
        raise ApiError(
            401,
            "REFRESH_TOKEN_REUSED",
            "this refresh token was already used; every session it started is signed out",
        )
    if outcome.status != "ok" or outcome.customer_id is None or outcome.family_id is None:
        raise ApiError(
            401,
            "INVALID_REFRESH_TOKEN",
            "the refresh token is not valid",
            details={"reason": outcome.status},
        )
    with acting(SYSTEM):
        try:
            customer = ctx.billing.get_customer(outcome.customer_id)
        except NotFound:
            customer = None
    if customer is None or customer.erased_at is not None:
        raise ApiError(401, "INVALID_REFRESH_TOKEN", "the account no longer exists")
    # The role is read again here: a promotion or demotion takes effect on refresh.
    principal = Principal(customer.id, customer.role.value)
    cookie = bool(body.cookie) if body else REFRESH_COOKIE in request.cookies
    return _tokens(ctx, principal, outcome.family_id, cookie=cookie, secure=_secure(ctx, request))


@router.post("/logout", response_model=Envelope, summary="Sign out")
def logout(ctx: Ctx, request: Request, body: RefreshBody | None = None) -> Response:
    """Revoke the refresh token's family and clear the auth cookies (access tokens expire on their own)."""
    token = (body.refresh_token if body else None) or request.cookies.get(REFRESH_COOKIE)
    if token:
        ctx.database.auth.revoke_family_of(token, ctx.billing.clock.now())
    response = ok(None, "signed out")
    response.delete_cookie(ACCESS_COOKIE)
    response.delete_cookie(REFRESH_COOKIE, path="/v1/auth")
    return response
