from django.db import migrations, models


def split_source(apps, schema_editor):  # type: ignore[no-untyped-def]
    """`source` was "live" or the code of the venue a bar was backfilled from."""
    Candle = apps.get_model("marketdata", "Candle")
    Candle.objects.filter(source="live").update(source="mid")
    Candle.objects.exclude(source="mid").update(venue=models.F("source"), source="backfill")


def join_source(apps, schema_editor):  # type: ignore[no-untyped-def]
    Candle = apps.get_model("marketdata", "Candle")
    Candle.objects.filter(source="backfill").update(source=models.F("venue"))
    Candle.objects.filter(source__in=("mid", "trades")).update(source="live")


class Migration(migrations.Migration):
    dependencies = [("marketdata", "0006_venue_demo_and_symbol_priority")]

    operations = [
        migrations.AddField(
            model_name="candle",
            name="venue",
            field=models.CharField(
                blank=True, default="", help_text="Code of the venue it came from.", max_length=32
            ),
        ),
        migrations.AddField(
            model_name="candle",
            name="replaced",
            field=models.BooleanField(
                default=False, help_text="A backfilled venue bar that replaced a bar built here."
            ),
        ),
        migrations.AlterField(
            model_name="candle",
            name="source",
            field=models.CharField(max_length=32, default="mid"),
        ),
        migrations.RunPython(split_source, join_source),
        migrations.AlterField(
            model_name="candle",
            name="source",
            field=models.CharField(
                choices=[("trades", "Trades"), ("mid", "Mid (tick volume)"), ("backfill", "Venue backfill")],
                default="mid",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="candle",
            name="partial",
            field=models.BooleanField(
                default=False,
                help_text="A live bar whose period began before the market loop was running, or fed by "
                "two venues (a failover inside it).",
            ),
        ),
    ]
