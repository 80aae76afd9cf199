"""``PaymentGateway`` on Stripe's official SDK: customers, PaymentIntents and refunds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import stripe

from lumenquest_adapters.stripe._errors import translate_stripe_errors
from lumenquest_core.customers import Customer
from lumenquest_core.errors import (
    CurrencyMismatch,
    GatewayUnavailable,
    IdempotencyConflict,
    NotFound,
    ValidationError,
)
from lumenquest_core.money import Money
from lumenquest_core.payments import ChargeResult, ChargeStatus

__all__ = [
    "METADATA_CUSTOMER_ID",
    "METADATA_IDEMPOTENCY_KEY",
    "NO_PAYMENT_METHOD",
    "StripeGateway",
]

METADATA_CUSTOMER_ID = "lumenquest_customer_id"
"""Metadata key of a Stripe customer (and PaymentIntent) holding our customer id."""

METADATA_IDEMPOTENCY_KEY = "lumenquest_idempotency_key"
"""Metadata key of a PaymentIntent or refund holding our idempotency key; webhooks read it."""

NO_PAYMENT_METHOD = "payment_method_missing"
"""Decline code of a charge for a customer with no default payment method at Stripe."""

# PaymentIntent states whose outcome is not known yet (asynchronous methods such as SEPA).
_UNSETTLED = frozenset({"processing", "requires_capture", "requires_confirmation"})


class StripeGateway:
    """A ``PaymentGateway`` on ``stripe.StripeClient``.

    Charges are PaymentIntents created with ``confirm=True, off_session=True`` on the
    customer's default payment method, with our idempotency key both as the request's
    ``Idempotency-Key`` and in the intent's metadata (``lumenquest_idempotency_key``,
    which the webhook mapping reads back).

    What makes a charge happen once: the idempotency key. The SDK's own retries
    (``max_network_retries``) and lumenquest's later retries of a pending payment
    send the same key, and Stripe replays the first answer (for 24 hours), the
    decline included. When the outcome of a create is unknown (a timeout, a reset
    connection, a 5xx), the gateway also looks the PaymentIntent up by its metadata
    among the customer's intents (:meth:`find_charge`) and returns what it finds, so
    an unknown outcome is resolved by reading, not by charging again. Stripe keeps
    keys for 24 hours: a host that retries a pending payment later than that should
    call :meth:`find_charge` first.

    Refunds look for an earlier refund with the same key on the PaymentIntent before
    creating one, check the currency and the amount left (Stripe's refund takes no
    currency), then create the refund with the key as ``Idempotency-Key``.
    """

    def __init__(self, client: stripe.StripeClient) -> None:
        self._client = client

    @classmethod
    def from_api_key(
        cls,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 2,
        timeout_seconds: float = 30.0,
    ) -> StripeGateway:
        """Build the gateway on a new ``StripeClient`` (``api_base`` overrides Stripe's API address)."""
        return cls(
            stripe.StripeClient(
                api_key,
                base_addresses={"api": api_base} if api_base else None,
                max_network_retries=max_network_retries,
                http_client=stripe.RequestsClient(timeout=timeout_seconds),
            )
        )

    # -- customers -------------------------------------------------------------------------

    def ensure_customer(self, customer: Customer) -> str:
        """Create or update the Stripe customer and return its ``cus_…`` id.

        A customer whose ``gateway_customer_id`` is set is updated. Otherwise the
        customer is looked up by email and our id in its metadata, so that a second
        call finds the first one's customer; only then is one created.
        """
        metadata = {METADATA_CUSTOMER_ID: customer.id}
        with translate_stripe_errors("ensure_customer"):
            reference = customer.gateway_customer_id or self._find_customer(customer)
            if reference is not None:
                self._client.v1.customers.update(
                    reference,
                    {"email": customer.email, "name": customer.name, "metadata": metadata},
                )
                return reference
            created = self._client.v1.customers.create(
                {"email": customer.email, "name": customer.name, "metadata": metadata},
                {"idempotency_key": _key("customer", customer.id, customer.email, customer.name)},
            )
            return created.id

    def attach_payment_method(
        self, customer: Customer, payment_method_id: str, *, make_default: bool = True
    ) -> str:
        """Attach a payment method (``pm_…``) to the customer, by default as the one charged.

        Return the attached method's id (Stripe's test methods such as ``pm_card_visa``
        attach as a new ``pm_…``). A card the issuer refuses raises PaymentDeclined with
        Stripe's decline code.
        """
        reference = self.ensure_customer(customer)
        with translate_stripe_errors("attach_payment_method"):
            attached = self._client.v1.payment_methods.attach(
                payment_method_id, {"customer": reference}
            )
            if make_default:
                self._client.v1.customers.update(
                    reference, {"invoice_settings": {"default_payment_method": attached.id}}
                )
        return attached.id

    def _find_customer(self, customer: Customer) -> str | None:
        listed = self._client.v1.customers.list({"email": customer.email, "limit": 100})
        for candidate in listed.auto_paging_iter():
            if _meta(candidate.metadata, METADATA_CUSTOMER_ID) == customer.id:
                return candidate.id
        return None

    def _default_payment_method(self, reference: str) -> str | None:
        found = self._client.v1.customers.retrieve(reference)
        settings = found.invoice_settings
        method = settings.default_payment_method if settings else None
        if method is None:
            return None
        return method if isinstance(method, str) else method.id

    # -- charges ---------------------------------------------------------------------------

    def charge(
        self,
        *,
        customer: Customer,
        amount: Money,
        idempotency_key: str,
        description: str,
        metadata: Mapping[str, str],
    ) -> ChargeResult:
        """Charge the customer's default payment method once per idempotency key."""
        if amount.amount <= 0:
            raise ValidationError(
                f"a charge must be positive, not {amount}", details={"amount": str(amount)}
            )
        with translate_stripe_errors("charge"):
            reference = customer.gateway_customer_id or self._find_customer(customer)
            method = self._default_payment_method(reference) if reference else None
            if reference is None or method is None:
                return ChargeResult(
                    status=ChargeStatus.DECLINED,
                    reference="",
                    decline_code=NO_PAYMENT_METHOD,
                    message=f"customer {customer.id} has no default payment method at Stripe",
                )
            params: stripe.params.PaymentIntentCreateParams = {
                "amount": amount.amount,
                "currency": amount.currency.lower(),
                "customer": reference,
                "payment_method": method,
                "confirm": True,
                "off_session": True,
                "metadata": {
                    **metadata,
                    **({"description": description[:500]} if description else {}),
                    METADATA_CUSTOMER_ID: customer.id,
                    METADATA_IDEMPOTENCY_KEY: idempotency_key,
                },
            }
            try:
                intent = self._client.v1.payment_intents.create(
                    params, {"idempotency_key": idempotency_key}
                )
            except stripe.CardError as exc:
                return _declined(exc)
            except (stripe.APIConnectionError, stripe.APIError):
                # The intent may exist: read before anyone charges again.
                found = self._find_quietly(reference, idempotency_key, amount)
                if found is None:
                    raise
                return found
            return _result(intent)

    def find_charge(self, customer: Customer, idempotency_key: str) -> ChargeResult | None:
        """Return the result of the charge made with ``idempotency_key``, if Stripe has one.

        Lists the customer's PaymentIntents (strongly consistent, unlike search) and
        matches our key in their metadata.
        """
        with translate_stripe_errors("find_charge"):
            reference = customer.gateway_customer_id or self._find_customer(customer)
            if reference is None:
                return None
            intent = self._find_intent(reference, idempotency_key)
            return None if intent is None else _result(intent)

    def _find_intent(self, reference: str, idempotency_key: str) -> stripe.PaymentIntent | None:
        listed = self._client.v1.payment_intents.list({"customer": reference, "limit": 100})
        for intent in listed.auto_paging_iter():
            if _meta(intent.metadata, METADATA_IDEMPOTENCY_KEY) == idempotency_key:
                return intent
        return None

    def _find_quietly(self, reference: str, key: str, amount: Money) -> ChargeResult | None:
        try:
            intent = self._find_intent(reference, key)
        except stripe.StripeError:
            return None  # still unknown: the caller reports the original failure
        if intent is None:
            return None
        if intent.amount != amount.amount or intent.currency != amount.currency.lower():
            raise IdempotencyConflict(
                f"idempotency key {key!r} was used for another charge",
                details={"idempotency_key": key, "reference": intent.id},
            )
        return _result(intent)

    # -- refunds ---------------------------------------------------------------------------

    def refund(self, *, reference: str, amount: Money, idempotency_key: str) -> str:
        """Refund part or all of a PaymentIntent once per idempotency key; return ``re_…``."""
        with translate_stripe_errors("refund"):
            intent = self._client.v1.payment_intents.retrieve(
                reference, {"expand": ["latest_charge"]}
            )
            charge = intent.latest_charge
            if intent.status != "succeeded" or not isinstance(charge, stripe.Charge):
                raise NotFound(
                    f"no successful charge {reference!r} to refund",
                    details={"kind": "charge", "id": reference, "status": intent.status},
                )
            if amount.currency.lower() != intent.currency:
                raise CurrencyMismatch(
                    f"charge {reference} is in {intent.currency.upper()}, not {amount.currency}",
                    details={"reference": reference},
                )
            listed = self._client.v1.refunds.list({"payment_intent": intent.id, "limit": 100})
            for earlier in listed.auto_paging_iter():
                if _meta(earlier.metadata, METADATA_IDEMPOTENCY_KEY) == idempotency_key:
                    if earlier.amount != amount.amount:
                        raise IdempotencyConflict(
                            f"idempotency key {idempotency_key!r} was used for another refund",
                            details={"idempotency_key": idempotency_key},
                        )
                    return earlier.id
            refundable = charge.amount - (charge.amount_refunded or 0)
            if amount.amount <= 0 or amount.amount > refundable:
                raise ValidationError(
                    f"cannot refund {amount} of charge {reference}:"
                    f" {Money(refundable, amount.currency)} is refundable",
                    details={"reference": reference, "refundable": refundable},
                )
            created = self._client.v1.refunds.create(
                {
                    "payment_intent": intent.id,
                    "amount": amount.amount,
                    "metadata": {METADATA_IDEMPOTENCY_KEY: idempotency_key},
                },
                {"idempotency_key": idempotency_key},
            )
            return created.id


def _meta(metadata: stripe.StripeObject | None, key: str) -> str | None:
    """Return a value of a Stripe object's metadata, if set."""
    return str(metadata[key]) if metadata is not None and key in metadata else None


def _key(*parts: str) -> str:
    """Return an idempotency key for a request built from ``parts`` (same parts, same key)."""
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]
    return f"lumenquest-{parts[0]}-{digest}"


def _result(intent: stripe.PaymentIntent) -> ChargeResult:
    if intent.status == "succeeded":
        return ChargeResult(status=ChargeStatus.SUCCEEDED, reference=intent.id)
    if intent.status in _UNSETTLED:
        # Not a fault, but the outcome is not known yet: the payment stays pending and
        # the payment_intent.succeeded / payment_failed webhook settles it.
        raise GatewayUnavailable(
            f"PaymentIntent {intent.id} is {intent.status}; its webhook will settle it",
            details={"reference": intent.id, "status": intent.status},
        )
    error = intent.last_payment_error
    return ChargeResult(
        status=ChargeStatus.DECLINED,
        reference=intent.id,
        decline_code=(error.decline_code or error.code) if error else intent.status,
        message=(error.message or "") if error else f"the PaymentIntent is {intent.status}",
    )


def _declined(exc: stripe.CardError) -> ChargeResult:
    error = exc.error
    intent = error.payment_intent if error else None
    return ChargeResult(
        status=ChargeStatus.DECLINED,
        reference=intent.id if intent else ((error.charge if error else None) or ""),
        decline_code=((error.decline_code if error else None) or exc.code) or "card_declined",
        message=exc.user_message or str(exc),
    )
