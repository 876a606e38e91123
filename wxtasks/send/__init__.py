"""The send path: enqueue → admit → gateway → record, and where a message waits meanwhile."""
