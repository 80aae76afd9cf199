import pytest

from lumenquest_core import errors


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ValidationError, "VALIDATION_ERROR"),
        (errors.CurrencyMismatch, "CURRENCY_MISMATCH"),
        (errors.UnknownCurrency, "UNKNOWN_CURRENCY"),
        (errors.NaiveDatetime, "NAIVE_DATETIME"),
        (errors.NotFound, "NOT_FOUND"),
        (errors.Conflict, "CONFLICT"),
        (errors.InvalidTransition, "INVALID_STATE_TRANSITION"),
        (errors.IdempotencyConflict, "IDEMPOTENCY_CONFLICT"),
        (errors.PaymentDeclined, "PAYMENT_DECLINED"),
        (errors.GatewayUnavailable, "GATEWAY_UNAVAILABLE"),
        (errors.ConfigurationError, "CONFIGURATION_ERROR"),
    ],
)
def test_every_error_has_its_stable_code(error, code):
    assert error.code == code
    assert issubclass(error, errors.LumenquestError)


def test_an_error_renders_as_the_seed_error_shape():
    error = errors.ValidationError("bad email", details={"field": "email"})
    assert error.to_dict() == {
        "code": "VALIDATION_ERROR",
        "message": "bad email",
        "details": {"field": "email"},
    }


def test_only_gateway_unavailable_is_retryable():
    assert errors.GatewayUnavailable.retryable
    assert not errors.PaymentDeclined.retryable


def test_a_declined_payment_carries_its_decline_code():
    error = errors.PaymentDeclined("card declined", decline_code="insufficient_funds")
    assert error.decline_code == "insufficient_funds"
    assert error.details == {"decline_code": "insufficient_funds"}
