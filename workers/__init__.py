"""The deployable side: ``celery -A workers worker|beat|flower``.

Roles (see README): send workers ``-Q send`` (they also take the default ``celery`` queue,
so a producer that names no queue is still served), control workers ``-Q control``,
one or more beats (one active at a time). Settings come from the environment / ``.env``.
"""

from workers.app import app

__all__ = ["app"]
