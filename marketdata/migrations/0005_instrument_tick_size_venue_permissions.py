from decimal import Decimal

import django.core.validators
from django.db import migrations, models


def tick_from_digits(apps, schema_editor):
    """Until now the tick size was one unit of the last digit: keep it so for existing instruments."""
    Instrument = apps.get_model("marketdata", "Instrument")
    for instrument in Instrument.objects.all():
        instrument.tick_size = Decimal(1).scaleb(-instrument.digits)
        instrument.save(update_fields=["tick_size"])


class Migration(migrations.Migration):
    dependencies = [
        ("marketdata", "0004_candle_partial"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="venue",
            options={
                "ordering": ("priority", "code"),
                "permissions": [
                    ("import_instruments", "Can import instruments from a venue's catalogue"),
                    ("change_watchlist", "Can add and remove the symbols a venue quotes"),
                ],
            },
        ),
        migrations.AlterField(
            model_name="instrument",
            name="digits",
            field=models.PositiveSmallIntegerField(help_text="Decimals of a price: those of the tick size."),
        ),
        migrations.AddField(
            model_name="instrument",
            name="tick_size",
            field=models.DecimalField(decimal_places=10, max_digits=20, null=True),
        ),
        migrations.RunPython(tick_from_digits, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="instrument",
            name="tick_size",
            field=models.DecimalField(
                blank=True,
                decimal_places=10,
                help_text="The smallest price step, not always a power of ten (0.5). Left empty: 1 unit of the last digit.",
                max_digits=20,
                validators=[django.core.validators.MinValueValidator(Decimal("1E-10"))],
            ),
        ),
        migrations.AddConstraint(
            model_name="instrument",
            constraint=models.CheckConstraint(
                condition=models.Q(("tick_size__gt", 0)), name="instrument_tick_size_positive"
            ),
        ),
    ]
