from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0003_notification_attempt_log"),
    ]

    operations = [
        migrations.AddField(
            model_name="indicatorvalue",
            name="n_eff",
            field=models.PositiveIntegerField(
                blank=True, help_text="Real bars behind the ATR, of the last 200 (MACD-V)", null=True
            ),
        ),
        migrations.AddField(
            model_name="indicatorvalue",
            name="span",
            field=models.PositiveIntegerField(
                blank=True, help_text="Bars from the first of those real bars to the last (MACD-V)", null=True
            ),
        ),
    ]
