"""JSON views over Billing; lumenquest's error codes become HTTP statuses in one place."""

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from billing_site.billing import billing
from lumenquest_core import LumenquestError
from lumenquest_core.codec import to_jsonable

STATUS = {
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "INVALID_STATE_TRANSITION": 409,
    "IDEMPOTENCY_CONFLICT": 409,
    "PAYMENT_DECLINED": 402,
    "GATEWAY_UNAVAILABLE": 503,
}


def billing_view(view: Callable[..., Any]) -> Callable[..., JsonResponse]:
    """Return the view's result as JSON, and a lumenquest error as {code, message, details}."""

    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return JsonResponse(to_jsonable(view(request, *args, **kwargs)), safe=False)
        except LumenquestError as exc:
            return JsonResponse(exc.to_dict(), status=STATUS.get(exc.code, 400))

    return wrapped


@csrf_exempt
@require_POST
@billing_view
def create_customer(request: HttpRequest) -> Any:
    body = json.loads(request.body or b"{}")
    return billing().create_customer(email=body.get("email", ""), name=body.get("name", ""))


@csrf_exempt
@require_POST
@billing_view
def subscribe(request: HttpRequest) -> Any:
    body = json.loads(request.body or b"{}")
    return billing().subscribe(
        customer_id=body.get("customer_id", ""),
        price_id=body.get("price_id", ""),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )


@require_GET
@billing_view
def invoices(request: HttpRequest, customer_id: str) -> Any:
    billing().get_customer(customer_id)  # NotFound → 404
    return billing().list_invoices(customer_id=customer_id)
