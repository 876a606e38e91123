"""The operator's console: a small web app next to Flower (``wxtasks console``).

Flower shows tasks; the console shows how things are going (the Overview) and accounts:
their states (live), the ones that need a human, a QR login in the browser, campaigns to
pause, resume or cancel, dead letters to requeue or purge, and a test send.
Server-rendered tornado templates with htmx (vendored, no build step) for the live parts.

=======================  =========================================================
module                   what
=======================  =========================================================
``auth``                 users, scrypt password hashes, CSRF tokens, HTTP Basic
``views``                the accounts table: an index to filter and page 10,000
``qrlogin``              QR login driven from the browser (getLoginQrCode/checkLogin),
                         kept in Redis: any console process serves any step
``overview``             the landing page: trends over the last hour / day
``charts``               server-side SVG charts (no chart library, no JavaScript)
``app``                  composition (``Console``), authentication on every route
``pages``                the handlers and the route table
``campaigns``            campaigns: progress, pause / resume / cancel, the CSV report
``wxtasks.cli.console``    ``wxtasks console [--host --port]``, ``hash-password``
=======================  =========================================================
"""
