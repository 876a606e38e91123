"""One appId rule for registration, sends, callbacks and the CLI: whatever can be
registered can be sent from, and what cannot is refused up front, naming the rule."""

from __future__ import annotations

import itertools

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Simulator, build, end_sent, settings_for
from wxtasks.accounts.machine import Event, State
from wxtasks.errors import BadInputError
from wxtasks.inbound.messages import parse_event
from wxtasks.keys import APP_ID_PATTERN, APP_ID_RULE, validate_app_id
from wxtasks.send.gates import Answer, Lane
from wxtasks.send.pipeline import Message

VALID = ["wx_7f3a9c21b0d4e5f6", "demo-01", "a", "A" * 64, "shop.eu@gw_2-b"]
INVALID = ["", "shop a", " a", "a{b}", "a}{b:*", "x" * 65, "a:b", "a*", "a?", "商店", "a\n", 7]


@pytest.mark.parametrize("app_id", VALID)
def test_real_and_demo_ids_follow_the_rule(app_id: str) -> None:
    assert validate_app_id(app_id) == app_id


@pytest.mark.parametrize("app_id", INVALID)
def test_every_entry_point_refuses_a_bad_id_naming_the_rule(
    app_id: object, redis_url: str, r: redis.Redis, simulator: Simulator
) -> None:
    store = build(r, settings_for(redis_url, simulator)).accounts
    # a missing or non-string appId says so; any other string names the rule
    rule = "1 to 64 characters" if isinstance(app_id, str) and app_id else None
    with pytest.raises(BadInputError, match=rule):
        store.register(app_id)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=rule):
        Message.parse("text", {"app_id": app_id, "to_wxid": "w", "content": "x"})
    with pytest.raises(BadInputError, match=rule):
        parse_event({"TypeName": "AddMsg", "Appid": app_id, "Data": {}})
    assert r.scard(store.keys.accounts) == 0


def test_the_error_names_the_whole_rule() -> None:
    with pytest.raises(BadInputError) as caught:
        validate_app_id("shop a")
    assert str(caught.value) == f"appId 'shop a' is not valid: an appId is {APP_ID_RULE}"


_counter = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(app_id=st.from_regex(APP_ID_PATTERN, fullmatch=True))
def test_every_id_the_rule_accepts_registers_and_sends(
    app_id: str, redis_url: str, r: redis.Redis, simulator: Simulator
) -> None:
    config = settings_for(
        redis_url,
        simulator,
        rate_per_second=1000,
        burst=1000,
        account_rate_per_second=1000,
        account_burst=1000,
    )
    store = build(r, config).accounts
    store.register(app_id)
    store.transition(app_id, Event.LOGIN_SUCCEEDED, expect=[State.IDLE])  # once per id
    pipe = build(r, config).pipeline
    n = next(_counter)
    message = Message.parse("text", {"app_id": app_id, "to_wxid": "wxid_c", "content": f"m{n}"})
    ticket = pipe.ticket(f"t{n}", Lane.INTERACTIVE, None)
    assert pipe.admit(message, ticket).answer is Answer.ADMITTED
    receipt, answer = pipe.deliver(message)
    assert receipt is not None, answer
    end_sent(pipe, message, ticket, receipt)
    pipe.fleet.close()
    assert simulator.sends()[-1]["appId"] == app_id
    assert r.hget(pipe.claim_key(message), "status") == "sent"
