"""Which actions a conversation may use (site, audience, turned off), the tools the model is
given, and the trigger patterns that pick an action from a customer's message."""

import time

import pytest

from chat.actions import selectors, services, tools
from chat.actions.models import Action
from chat.actions.triggers import MAX_TEXT_CHARS, matching_triggers
from chat.models import Site
from tests.actions.helpers import make_action

TRIGGER = [{"pattern": r"(?i)\b(A\d{4})\b", "parameter": "order_id"}]


def public(name: str, **fields) -> Action:
    return make_action(
        name=name,
        audience=Action.Audience.PUBLIC,
        url="https://shop.example.com/{order_id}",
        **fields,
    )


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")


@pytest.mark.django_db
def test_actions_for_a_conversation_by_site_and_audience(site):
    other = Site.objects.create(name="Other", allowed_origins="https://other.example.com")
    for action in (
        make_action(name="order_status"),
        public("faq_lookup"),
        public("site_only", site=site),
        public("other_site", site=other),
        public("switched_off", enabled=False),
    ):
        services.action_save(action=action)

    def names(**kwargs):
        return [a.name for a in selectors.actions_for(**kwargs)]

    assert names(site_id=site.pk, verified=True) == ["faq_lookup", "order_status", "site_only"]
    assert names(site_id=site.pk, verified=False) == ["faq_lookup", "site_only"]
    assert names(site_id=None, verified=True) == ["faq_lookup", "order_status"]
    assert selectors.action_for(site_id=site.pk, name="order_status", verified=False) is None
    assert selectors.action_for(site_id=site.pk, name="other_site", verified=True) is None
    assert (
        selectors.action_for(site_id=site.pk, name="site_only", verified=False).site_id == site.pk
    )


@pytest.mark.django_db
def test_a_sites_own_action_replaces_the_shared_one_even_when_off(site):
    services.action_save(action=public("faq_lookup", description="Shared."))
    services.action_save(action=public("faq_lookup", site=site, description="The site's own."))
    [chosen] = selectors.actions_for(site_id=site.pk, verified=True)
    assert chosen.description == "The site's own."
    Action.objects.filter(site=site).update(enabled=False)
    assert selectors.actions_for(site_id=site.pk, verified=True) == []  # the site opted out
    assert [a.description for a in selectors.actions_for(site_id=None, verified=True)] == [
        "Shared."
    ]


def test_tool_definitions_give_the_model_name_description_and_schema_only():
    action = make_action(headers={"Authorization": "Bearer ${T}"})
    assert tools.tool_definitions([action]) == [
        {
            "type": "function",
            "function": {
                "name": "order_status",
                "description": "Look up one of the customer's orders by its number.",
                "parameters": action.parameters,
            },
        }
    ]
    shown = str(tools.tool_definitions([action]))
    assert "shop.example.com" not in shown and "Authorization" not in shown


# --- triggers -----------------------------------------------------------------------------------------


def test_a_trigger_picks_the_action_and_fills_its_parameter():
    status = make_action(triggers=TRIGGER)
    other = public("faq_lookup")
    found = matching_triggers([other, status], "Hi, where is my order a1001? It was due Monday")
    # The schema wants an upper-case A: "a1001" is no match for it.
    assert found == []
    found = matching_triggers([other, status], "Hi, where is my order A1001? Also A1002.")
    assert found == [(status, {"order_id": "A1001"})]  # the first match, once per action


def test_a_match_the_parameter_refuses_is_no_match():
    status = make_action(triggers=[{"pattern": r"#(\w+)", "parameter": "order_id"}])
    assert matching_triggers([status], "ticket #12345") == []
    assert matching_triggers([status], "order #A1234") == [(status, {"order_id": "A1234"})]


def test_a_numeric_parameter_gets_a_number():
    action = make_action(
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        url="https://s.example.com/{n}",
        triggers=[{"pattern": r"ticket (\d+)", "parameter": "n"}],
    )
    assert matching_triggers([action], "about ticket 42") == [(action, {"n": 42})]


def test_only_the_start_of_a_long_message_is_searched():
    status = make_action(triggers=TRIGGER)
    assert matching_triggers([status], "x " * MAX_TEXT_CHARS + "A1001") == []
    assert matching_triggers([status], "A1001 " + "x " * MAX_TEXT_CHARS) != []


def test_a_pattern_that_backtracks_without_end_costs_one_message_little_time(caplog):
    slow = make_action(
        parameters={"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
        url="https://s.example.com/{x}",
        triggers=[{"pattern": r"((?:x+x+)+)y", "parameter": "x"}],
    )
    started = time.monotonic()
    assert matching_triggers([slow, make_action(triggers=TRIGGER)], "x" * 1900 + " A1001") != []
    assert time.monotonic() - started < 1.0
    assert "took over" in caplog.text


def test_a_broken_trigger_saved_around_the_checks_is_skipped():
    broken = make_action(triggers=[{"pattern": "(unclosed", "parameter": "order_id"}, "junk"])
    assert matching_triggers([broken], "A1001 (unclosed") == []
