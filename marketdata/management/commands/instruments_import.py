from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kernel.errors import ServiceError
from marketdata.catalogue import ImportPlan, PlanItem
from marketdata.models import Venue
from marketdata.services import instruments_import, venue_watchlist_change
from users.models import User


def _describe(item: PlanItem) -> str:
    if item.action == "skipped":
        return item.reason
    if item.action == "create":
        shown = (
            "tick_size",
            "digits",
            "volume_min",
            "volume_max",
            "volume_step",
            "contract_size",
            "tradable",
        )
        text = ", ".join(f"{k}={item.values[k]}" for k in shown)
    else:
        text = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in item.changes.items())
    if item.mapping == "rename":
        text += f"{', ' if text else ''}mapping renamed from {item.old_name}"
    elif item.mapping == "create" and item.action == "update":
        text += f"{', ' if text else ''}mapping added"
    if item.entry.venue_margin_rate is not None:
        text += f" (venue margin rate {item.entry.venue_margin_rate}, not imported)"
    return text


class Command(BaseCommand):
    help = (
        "Import instruments (tick size, lot step, min/max size, currencies, description) from a venue's "
        "catalogue: Coinbase products, Binance exchangeInfo, OANDA account instruments. New mappings "
        "are off the watchlist; --add/--remove put a venue's symbols on or off it (the running market "
        "loop applies it within seconds)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("venue", help="venue code")
        parser.add_argument("--match", default="", help="shell patterns, comma separated: 'BTC-*,ETH-USD'")
        parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
        parser.add_argument(
            "--watch", action="store_true", help="also put the imported symbols on the watchlist"
        )
        parser.add_argument("--add", nargs="+", default=[], metavar="SYMBOL", help="put on the watchlist")
        parser.add_argument(
            "--remove", nargs="+", default=[], metavar="SYMBOL", help="take off the watchlist"
        )
        parser.add_argument("--operator", help="username the change is audited under")

    def handle(self, *args: Any, **options: Any) -> None:
        venue = Venue.objects.filter(code=options["venue"]).first()
        if venue is None:
            known = ", ".join(Venue.objects.values_list("code", flat=True)) or "none"
            raise CommandError(f"Unknown venue {options['venue']!r} (known: {known}).")
        operator = None
        if options["operator"]:
            operator = User.objects.filter(username=options["operator"], is_staff=True).first()
            if operator is None:
                raise CommandError(f"No staff user {options['operator']!r}.")
        try:
            if options["add"] or options["remove"]:
                if options["match"] or options["dry_run"] or options["watch"]:
                    raise CommandError(
                        "--add/--remove change the watchlist only: no --match, --dry-run or --watch."
                    )
                change = venue_watchlist_change(
                    venue=venue, add=options["add"], remove=options["remove"], actor=operator
                )
                self.stdout.write(
                    f"{venue.code} watchlist: added {', '.join(change.added) or 'none'}; "
                    f"removed {', '.join(change.removed) or 'none'}"
                    + (f"; already so: {', '.join(change.unchanged)}" if change.unchanged else "")
                )
                return
            plan = instruments_import(
                venue=venue,
                match=options["match"],
                dry_run=options["dry_run"],
                watch=options["watch"],
                actor=operator,
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self._report(plan, dry_run=options["dry_run"])

    def _report(self, plan: ImportPlan, *, dry_run: bool) -> None:
        for action in ("create", "update", "skipped", "unchanged"):
            for item in plan.of(action):
                detail = _describe(item) if action != "unchanged" else ""
                self.stdout.write(
                    f"{action:9} {item.entry.venue_symbol:16} {item.symbol:12} {detail}".rstrip()
                )
        for name, why in plan.errors:
            self.stderr.write(f"error     {name:16} {why}")
        counts = ", ".join(f"{n} {a}" for a, n in plan.counts.items())
        self.stdout.write(f"{plan.venue}: {counts}{' (dry run: nothing written)' if dry_run else ''}")
        if plan.errors:
            raise CommandError(
                f"{len(plan.errors)} catalogue entries cannot be imported: an import would write nothing."
            )
