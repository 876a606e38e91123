"""Development tooling, outside the runtime path: no worker, beat or receiver imports it.

- :mod:`wxtasks.dev.stack`: ``wxtasks dev``'s supervisor (the whole stack as child
  processes), also used by the tests and benchmarks;
- :mod:`wxtasks.dev.simulator`: a real HTTP gateway for development, tests and benchmarks
  (``wxtasks simulator``);
- :mod:`wxtasks.dev.redis_server`: a throwaway ``redis-server`` where none is installed.

A test checks that ``import workers`` loads none of these.
"""
