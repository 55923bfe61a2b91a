"""The queue face of zooscope: the Celery app, one thin task per job kind, the stale-job sweep
and the embedded run mode. Nothing here holds business logic: a task claims its job row, calls
the library, and records the result through `app.db`.
"""
