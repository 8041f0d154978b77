"""The shared kernel: errors, Redis, SQL, leases, idempotency, throttling, fields and the other
building blocks every app uses. It imports no app and not the composition root (livermore)."""
