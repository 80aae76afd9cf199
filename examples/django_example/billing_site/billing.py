"""One ``Billing`` per process, built from LUMENQUEST_* variables on first use."""

from functools import cache

from lumenquest_adapters.config import build_backend
from lumenquest_core import Billing


@cache
def billing() -> Billing:
    # Built lazily, not at import: `manage.py check` and migrations need no database.
    return build_backend().billing
