from django.db import models


class LeaseFence(models.Model):
    """The highest fence number handed out for a leader lease (kernel/lease.py writes and checks it
    in SQL): durable, so a Redis that restarted empty never makes a fence go backwards."""

    name = models.CharField(max_length=100, primary_key=True)
    token = models.BigIntegerField()

    class Meta:
        db_table = "kernel_lease_fence"

    def __str__(self) -> str:
        return f"{self.name}: {self.token}"
