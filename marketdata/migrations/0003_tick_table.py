from django.db import migrations

from marketdata import ticks


def create(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        ticks.tick_table_create(cursor)


def drop(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        ticks.tick_table_drop(cursor)


class Migration(migrations.Migration):
    """The tick table is partitioned by day (or a TimescaleDB hypertable), which Django's schema
    editor cannot express: marketdata.ticks owns its DDL and the recorder writes it with COPY."""

    dependencies = [("marketdata", "0002_candle")]

    operations = [migrations.RunPython(create, drop)]
