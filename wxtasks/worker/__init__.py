"""Celery plumbing: the app's configuration and message envelope, the consumer, and the
beat scheduler. Only worker, beat and producer processes import it."""
