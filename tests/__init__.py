"""The wxtasks test suite (a package, so test modules share helpers as ``tests.conftest``)."""
