"""Thin Celery tasks; the logic lives in plain modules (accounts, send, campaigns, inbound).

Importing this package registers every ``wxtasks.*`` task with the current Celery app.
"""

from wxtasks.tasks import fanout, inbound, lifecycle, send

__all__ = ["fanout", "inbound", "lifecycle", "send"]
