"""The Django example, run for real: its views through Django's test client, its command.

Django's settings are process-wide, so the example runs in a subprocess of its own.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django", reason="the Django example needs Django (the dev extra has it)")

EXAMPLE = Path(__file__).parents[2] / "examples" / "django_example"

SCRIPT = """
import json
import django
django.setup()
from django.core.management import call_command
from django.test import Client
from lumenquest_adapters.sqlalchemy import create_engine_for, upgrade
from lumenquest_core import BillingCycle, Interval, Money
from billing_site.billing import billing
import os, io

upgrade(create_engine_for(os.environ["LUMENQUEST_DATABASE_URL"]))
plan = billing().create_plan(name="Pro")
price = billing().create_price(
    plan_id=plan.id, unit_amount=Money(1500, "USD"), cycle=BillingCycle(Interval.MONTH)
)
client = Client(HTTP_HOST="localhost")
out = {}
created = client.post(
    "/customers", data=json.dumps({"email": "Ada@Example.com", "name": "Ada"}),
    content_type="application/json",
)
out["customer"] = [created.status_code, created.json()]
customer_id = created.json()["id"]
body = json.dumps({"customer_id": customer_id, "price_id": price.id})
first = client.post("/subscriptions", data=body, content_type="application/json",
                    headers={"Idempotency-Key": "k1"})
again = client.post("/subscriptions", data=body, content_type="application/json",
                    headers={"Idempotency-Key": "k1"})
out["subscribe"] = [first.status_code, first.json()["id"], again.json()["id"]]
out["invoices"] = client.get(f"/customers/{customer_id}/invoices").json()
missing = client.get("/customers/cus_missing/invoices")
out["missing"] = [missing.status_code, missing.json()["code"]]
printed = io.StringIO()
call_command("run_due", stdout=printed)
out["run_due"] = printed.getvalue()
print(json.dumps(out))
"""


def test_the_django_example_serves_billing_and_runs_due_work(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LUMENQUEST_")},
        "LUMENQUEST_DATABASE_URL": f"sqlite:///{tmp_path / 'billing.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "billing_site.settings",
        "PYTHONPATH": str(EXAMPLE),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    status, customer = out["customer"]
    assert status == 200
    assert customer["email"] == "ada@example.com"
    status, sub_id, replayed_id = out["subscribe"]
    assert status == 200
    assert replayed_id == sub_id  # the same Idempotency-Key returns the first subscription
    assert [invoice["total"] for invoice in out["invoices"]] == [
        {"amount": 1500, "currency": "USD"}
    ]
    assert out["missing"] == [404, "NOT_FOUND"]
    assert out["run_due"].startswith("0 subscriptions")  # nothing is due yet
