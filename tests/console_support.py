"""What the console tests share: a `wxtasks console` process and a logged-in HTTP client."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

import requests

from wxtasks.config import Settings
from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import Child, Supervisor, wait_until

USER = "ops"  # an admin: the tests of pages and actions may press every button
PASSWORD = "pw-for-console-tests"
#: a user of each role (the role tests log in as each)
ROLE_USERS = {"viewer": "vic", "operator": "opal", "admin": "ada"}


def role_password(name: str) -> str:
    return f"pw-{name}-for-console-tests"


def users_env() -> str:
    """WXTASKS_CONSOLE_USERS with USER (admin) and one user of each role."""
    entries = [f"{USER}:{PASSWORD}:admin"]
    entries += [f"{name}:{role_password(name)}:{role}" for role, name in ROLE_USERS.items()]
    return ",".join(entries)


@dataclass
class ConsoleProcess:
    url: str
    child: Child

    def basic(self, user: str = USER, password: str = PASSWORD) -> requests.Session:
        """A script's session: HTTP Basic on every request, the CSRF token at hand."""
        http = requests.Session()
        http.auth = (user, password)
        http.headers["X-CSRF-Token"] = http.get(self.url + "/api/session", timeout=10).json()[
            "csrf_token"
        ]
        return http

    def form_login(self, user: str = USER, password: str = PASSWORD) -> requests.Session:
        """A browser's way in, without the browser: the login form, then the cookie."""
        http = requests.Session()
        page = http.get(self.url + "/login", timeout=10)
        token = csrf_in(page.text)
        reply = http.post(
            self.url + "/login",
            data={"username": user, "password": password, "_csrf": token},
            timeout=10,
        )
        assert reply.ok, reply.text
        return http


def csrf_in(html: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def start_console(supervisor: Supervisor, settings: Settings, **env: str) -> ConsoleProcess:
    port = free_port()
    child = supervisor.start(
        f"console-{port}",
        [sys.executable, "-m", "wxtasks", "console", "--port", str(port)],
        {
            **settings.environ(),
            "WXTASKS_CONSOLE_USERS": users_env(),
            "WXTASKS_LOG_FORMAT": "text",
            **env,
        },
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert child.alive, f"the console exited; see {child.log_path}"
        try:
            return requests.get(url + "/login", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, 30, 0.1, "the console to listen")
    return ConsoleProcess(url, child)


def demo_accounts(store: Any, n: int = 20, **options: Any) -> list[str]:
    from wxtasks.accounts.machine import Event

    ids = [f"demo-{i:02d}" for i in range(1, n + 1)]
    for app_id in ids:
        store.register(app_id, note="demo account", **options)
        store.transition(app_id, Event.LOGIN_SUCCEEDED)
    return ids
