"""``python manage.py run_due``: the billing run, for cron (or use ``lumenquest run-due``)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing_site.billing import billing


class Command(BaseCommand):
    help = "Renew, end trials, retry failed payments: everything due now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=10_000)

    def handle(self, *args: Any, **options: Any) -> None:
        summary = billing().run_due(limit=options["limit"])
        self.stdout.write(
            f"{summary.subscriptions} subscriptions: {summary.renewals} renewed,"
            f" {summary.payments_failed} payments failed"
        )
