"""Demo data for ``make run``: the seed's plans and an administrator whose password is printed."""

from __future__ import annotations

import secrets

import attrs

from asgi_app.context import AppContext
from asgi_app.database import SYSTEM, Credential, acting
from lumenquest_core.catalog import PricingScheme
from lumenquest_core.customers import Role
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval

__all__ = ["DEMO_ADMIN_EMAIL", "AdminAccount", "seed_admin", "seed_plans"]

DEMO_ADMIN_EMAIL = "admin@lumenquest.test"


@attrs.frozen
class AdminAccount:
    """The demo administrator's sign-in."""

    email: str
    password: str


def seed_plans(ctx: AppContext) -> list[str]:
    """Create Free, Pro (monthly and yearly) and Business (per seat) unless a plan of that name exists."""
    billing = ctx.billing
    month, year = BillingCycle(Interval.MONTH), BillingCycle(Interval.YEAR)
    catalog = [
        ("Free", ["projects:1"], [("Free", 0, month, PricingScheme.FLAT, 0)]),
        (
            "Pro",
            ["projects:unlimited", "reports", "exports"],
            [
                ("Pro monthly", 2000, month, PricingScheme.FLAT, 14),
                ("Pro yearly", 20000, year, PricingScheme.FLAT, 14),
            ],
        ),
        (
            "Business",
            ["projects:unlimited", "reports", "exports", "sso", "audit-log"],
            [("Business per seat", 1500, month, PricingScheme.PER_UNIT, 0)],
        ),
    ]
    created: list[str] = []
    with acting(SYSTEM):
        existing = {plan.name for plan in billing.list_plans()}
        for name, features, prices in catalog:
            if name in existing:
                continue
            plan = billing.create_plan(name=name, features=features)
            for nickname, amount, cycle, scheme, trial in prices:
                billing.create_price(
                    plan_id=plan.id,
                    unit_amount=Money(amount, "USD"),
                    cycle=cycle,
                    scheme=scheme,
                    trial_days=trial,
                    nickname=nickname,
                )
            created.append(name)
    return created


def seed_admin(ctx: AppContext, email: str = DEMO_ADMIN_EMAIL) -> AdminAccount:
    """Create (or reset the password of) the demo administrator; return its credentials."""
    password = secrets.token_urlsafe(12)
    hashed = ctx.passwords.hash(password)
    now = ctx.billing.clock.now()
    with acting(SYSTEM):
        customer = ctx.billing.find_customer_by_email(email)
        if customer is None:
            customer = ctx.billing.create_customer(email=email, name="Demo admin", role=Role.ADMIN)
        elif customer.role is not Role.ADMIN:
            customer = ctx.billing.update_customer(customer.id, role=Role.ADMIN)
    if ctx.database.auth.credential_by_email(customer.email) is None:
        ctx.database.auth.add_credential(Credential(customer.id, customer.email, hashed), now)
    else:
        ctx.database.auth.update_credential(customer.id, password_hash=hashed)
    return AdminAccount(customer.email, password)
