"""Accounts: the state machine's pure rules (``machine``), the registry and its atomic
transitions in Redis (``store``), and login / heartbeat / reconnect (``lifecycle``)."""
