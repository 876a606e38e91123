"""What gateways push: the callback receiver (``receiver``, HTTP) and received messages
(``messages``: parse, dedupe, record, hand to the handlers of :mod:`wxtasks.handlers`)."""
