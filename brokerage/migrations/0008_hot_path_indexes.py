"""Indexes the market order path maintains with no query needing them: a position's account has
position_account_status_idx (account, status), which leads with it (and serves the exposures query
with only the account's open positions); an order's position (the one it closes) is indexed only
where there is one, most orders opening a position. Index changes only: Django's AlterField would
drop and re-validate the foreign keys as well."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("brokerage", "0007_trading_states")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="order",
                    name="position",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="The position this order closes (position_close), if any.",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="closing_orders",
                        to="brokerage.position",
                    ),
                ),
                migrations.AlterField(
                    model_name="position",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="positions",
                        to="brokerage.tradingaccount",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX "brokerage_order_position_id_c4ccf3ef"',
                    'CREATE INDEX "brokerage_order_position_id_c4ccf3ef" ON "brokerage_order" ("position_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX "brokerage_position_account_id_8f9cd5a6"',
                    'CREATE INDEX "brokerage_position_account_id_8f9cd5a6" ON "brokerage_position" ("account_id")',
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="order",
            index=models.Index(
                condition=models.Q(("position__isnull", False)),
                fields=["position"],
                name="order_position_idx",
            ),
        ),
    ]
