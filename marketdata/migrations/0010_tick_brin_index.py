from datetime import UTC, datetime

from django.db import migrations

from marketdata import ticks


def forward(apps, schema_editor):
    """The (symbol, ts) btree of every day partition becomes a BRIN on ts, with the btree kept on the
    days that are over only; each symbol's last seq goes to its own table (marketdata.ticks)."""
    with schema_editor.connection.cursor() as cursor:
        if ticks.is_partitioned(cursor):
            cursor.execute(f"DROP INDEX IF EXISTS {ticks.TABLE}{ticks.INDEX_SUFFIX}")
        ticks.tick_table_create(cursor)
        if ticks.is_partitioned(cursor):
            ticks.partitions_index(cursor, before=datetime.now(UTC).date())
        cursor.execute(
            f"INSERT INTO {ticks.SEQ_TABLE} (symbol, seq) SELECT symbol, max(seq) FROM {ticks.TABLE} "  # noqa: S608 (constants)
            "GROUP BY symbol ON CONFLICT (symbol) DO NOTHING"
        )


def backward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {ticks.SEQ_TABLE}")
        if ticks.is_partitioned(cursor):
            cursor.execute(f"DROP INDEX IF EXISTS {ticks.TABLE}_ts_brin")
            for name, _, _ in ticks.partitions_list(cursor):
                cursor.execute(f"DROP INDEX IF EXISTS {name}{ticks.INDEX_SUFFIX}")
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {ticks.TABLE}{ticks.INDEX_SUFFIX} ON {ticks.TABLE} (symbol, ts)"
            )


class Migration(migrations.Migration):
    dependencies = [("marketdata", "0009_candle_import_suspect")]

    operations = [migrations.RunPython(forward, backward)]
