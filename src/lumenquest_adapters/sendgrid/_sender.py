"""``EmailSender`` on SendGrid's official SDK: dynamic templates, categories, custom args."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from python_http_client import exceptions as http_errors  # type: ignore[import-untyped]
from sendgrid import SendGridAPIClient  # type: ignore[import-untyped]

from lumenquest_core.codec import to_jsonable
from lumenquest_core.errors import ConfigurationError, GatewayUnavailable, ValidationError
from lumenquest_core.ports import EmailMessage

__all__ = ["CUSTOM_ARG_MESSAGE_ID", "SendGridEmailSender", "translate_sendgrid_errors"]

CUSTOM_ARG_MESSAGE_ID = "lumenquest_message_id"
"""The custom arg carrying our message id; SendGrid echoes it in every webhook event."""


class _MailClient(Protocol):
    """The part of ``SendGridAPIClient`` the sender uses (the SDK ships no types)."""

    def send(self, message: dict[str, Any]) -> Any:
        """POST /v3/mail/send; return the response (``.status_code``, ``.headers``)."""
        ...


def _sendgrid_message(error: Any) -> str:
    """Return SendGrid's own words from an error response body ``{"errors": [{message}]}``."""
    try:
        errors = json.loads(error.body)["errors"]
        return "; ".join(str(e.get("message")) for e in errors) or str(error.reason)
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(getattr(error, "reason", "")) or type(error).__name__


@contextmanager
def translate_sendgrid_errors(operation: str) -> Iterator[None]:
    """Re-raise the SendGrid SDK's errors as lumenquest errors.

    ::

        400, 413                  ValidationError      (SendGrid's message)
        401, 403                  ConfigurationError   (the API key or its scopes)
        other 4xx (404, 405, …)   ConfigurationError   (the host or the request shape)
        429, 5xx                  GatewayUnavailable   (retryable)
        network errors, timeouts  GatewayUnavailable   (retryable)
    """
    try:
        yield
    except http_errors.HTTPError as exc:
        status = int(exc.status_code)
        message = _sendgrid_message(exc)
        details = {"operation": operation, "http_status": status}
        if status in (400, 413):
            raise ValidationError(
                f"SendGrid refused the email: {message}", details=details
            ) from exc
        if status in (401, 403):
            raise ConfigurationError(
                f"SendGrid rejected the API key ({status}: {message}); check the SendGrid"
                " API key the email sender was configured with and its Mail Send scope",
                details=details,
            ) from exc
        if status == 429 or status >= 500:
            raise GatewayUnavailable(
                f"SendGrid is unavailable ({status}): {message}", details=details
            ) from exc
        raise ConfigurationError(
            f"SendGrid answered {status} to {operation}: {message}", details=details
        ) from exc
    except OSError as exc:  # URLError, timeouts, refused or reset connections
        raise GatewayUnavailable(
            f"SendGrid cannot be reached: {exc}", details={"operation": operation}
        ) from exc


class SendGridEmailSender:
    """An ``EmailSender`` sending each message with a SendGrid dynamic template.

    ``templates`` maps our template names (``EmailMessage.template``: "welcome",
    "invoice_paid", …) to SendGrid template ids (``d-…``); the message's data becomes
    ``dynamic_template_data``. Each email carries ``categories`` plus its template name,
    and our ``message_id`` as the custom arg ``lumenquest_message_id``, which the event
    webhook echoes back. ``sandbox=True`` has SendGrid validate without delivering.
    ``send`` returns SendGrid's ``X-Message-Id`` (our message id when SendGrid gives
    none, as in sandbox mode).
    """

    def __init__(
        self,
        client: _MailClient,
        *,
        from_email: str,
        templates: Mapping[str, str],
        from_name: str = "",
        categories: Sequence[str] = (),
        sandbox: bool = False,
    ) -> None:
        self._client = client
        self.from_email = from_email
        self.from_name = from_name
        self.templates = dict(templates)
        self.categories = tuple(categories)
        self.sandbox = sandbox

    @classmethod
    def from_api_key(
        cls,
        api_key: str,
        *,
        from_email: str,
        templates: Mapping[str, str],
        host: str | None = None,
        timeout_seconds: float = 30.0,
        **options: Any,
    ) -> SendGridEmailSender:
        """Build the sender on a new ``SendGridAPIClient`` (``host`` overrides SendGrid's)."""
        client = SendGridAPIClient(api_key=api_key, **({"host": host} if host else {}))
        client.client.timeout = timeout_seconds  # the SDK's HTTP client has no timeout by default
        return cls(client, from_email=from_email, templates=templates, **options)

    def request_body(self, message: EmailMessage) -> dict[str, Any]:
        """Return the JSON body of SendGrid's mail-send request for ``message``."""
        template_id = self.templates.get(message.template)
        if template_id is None:
            raise ConfigurationError(
                f"no SendGrid template id for the {message.template!r} email; configured:"
                f" {sorted(self.templates)}",
                details={"template": message.template},
            )
        sender: dict[str, str] = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        return {
            "from": sender,
            "personalizations": [
                {
                    "to": [{"email": message.to}],
                    "dynamic_template_data": to_jsonable(dict(message.data)),
                }
            ],
            "template_id": template_id,
            "categories": [*self.categories, message.template],
            "custom_args": {CUSTOM_ARG_MESSAGE_ID: message.message_id},
            "mail_settings": {"sandbox_mode": {"enable": self.sandbox}},
        }

    def send(self, message: EmailMessage) -> str:
        """Send the message and return SendGrid's message id."""
        body = self.request_body(message)
        with translate_sendgrid_errors("send"):
            response = self._client.send(body)
        headers = getattr(response, "headers", None)
        provider_id = headers.get("X-Message-Id") if headers is not None else None
        return str(provider_id or message.message_id)
