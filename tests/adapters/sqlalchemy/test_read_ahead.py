"""Rows read ahead (PostgreSQL, batch mode): each read they stand for answers as it would have.

A price is read with its plan.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import SqlAlchemyUnitOfWork, upgrade
from lumenquest_adapters.testing.samples import customer, plan, price
from lumenquest_core.errors import NotFound


@pytest.fixture
def engine(postgres_empty: Engine) -> Engine:
    """A customer, a plan and its price."""
    upgrade(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.customers.add(customer("cus_1"))
        uow.plans.add(plan("plan_1"))
        uow.prices.add(price("price_1"))
        uow.commit()
    return postgres_empty


def test_a_price_is_read_with_its_plan_in_batch_mode(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch()
        assert uow.prices.get("price_1") == price("price_1")
        assert uow.plans.get("plan_1") == plan("plan_1")
        with pytest.raises(NotFound):
            uow.prices.get("price_missing")
        uow.rollback()
