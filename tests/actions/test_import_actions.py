"""`manage.py import_actions`: create, update by name and site, nothing imported when anything is
wrong (each problem naming the action and the field), the sample and its removal."""

import io
import json
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from chat.actions.models import Action
from chat.models import Site

pytestmark = pytest.mark.django_db

ORDER_STATUS = {
    "name": "order_status",
    "description": "Look up one of the customer's orders.",
    "url": "https://shop.example.com/api/orders/{order_id}?customer={customer.id}",
    "headers": {"Authorization": "Bearer ${SHOP_API_TOKEN}"},
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
    "result": "Order {order_id}: {status}",
    "triggers": [{"pattern": r"(?i)\b(A\d{4})\b", "parameter": "order_id"}],
}
FAQ = {
    "name": "opening_hours",
    "description": "Today's opening hours of a store.",
    "audience": "public",
    "url": "https://shop.example.com/api/stores/{store}",
    "parameters": {
        "type": "object",
        "properties": {"store": {"type": "string"}},
        "required": ["store"],
    },
    "result": "{hours}",
}


def run(*args) -> str:
    out = io.StringIO()
    call_command("import_actions", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def write(path: Path, data, *, as_json: bool = False) -> Path:
    path.write_text(json.dumps(data) if as_json else yaml.safe_dump(data, allow_unicode=True))
    return path


def test_a_yaml_file_creates_its_actions(tmp_path):
    out = run(str(write(tmp_path / "actions.yaml", {"actions": [ORDER_STATUS, FAQ]})))
    assert "created order_status" in out and "created opening_hours" in out
    assert "2 created, 0 updated, 0 unchanged." in out
    status = Action.objects.get(name="order_status")
    assert (status.audience, status.method, status.timeout_seconds, status.is_sample) == (
        "verified",
        "GET",
        5.0,
        False,
    )
    assert status.headers == {"Authorization": "Bearer ${SHOP_API_TOKEN}"}


def test_a_json_list_works_too_and_importing_again_updates_by_name(tmp_path):
    path = write(tmp_path / "actions.json", [ORDER_STATUS], as_json=True)
    run(str(path))
    first_id = Action.objects.get().pk
    assert "0 created, 0 updated, 1 unchanged." in run(str(path))
    write(path, [{**ORDER_STATUS, "result": "Order {order_id} is {status}."}], as_json=True)
    out = run(str(path))
    assert "updated order_status" in out and "0 created, 1 updated" in out
    action = Action.objects.get()
    assert (action.pk, action.result) == (first_id, "Order {order_id} is {status}.")


def test_one_mistake_imports_nothing_and_names_action_and_field(tmp_path):
    run(str(write(tmp_path / "old.yaml", [ORDER_STATUS])))
    broken_faq = {
        **FAQ,
        "parameters": {"type": "object", "properties": {"store": {"type": "strin"}}},
    }
    changed_status = {**ORDER_STATUS, "description": "Changed."}
    path = write(tmp_path / "new.yaml", [changed_status, broken_faq])
    with pytest.raises(CommandError) as refused:
        run(str(path))
    message = str(refused.value)
    assert message.startswith("Nothing imported; ")
    assert "new.yaml, action 2 (opening_hours): parameters: is not a valid JSON Schema" in message
    assert not Action.objects.filter(name="opening_hours").exists()
    assert Action.objects.get(name="order_status").description == ORDER_STATUS["description"]


def test_every_problem_of_the_file_is_listed_at_once(tmp_path):
    path = write(
        tmp_path / "bad.yaml",
        [
            ORDER_STATUS,
            {**FAQ, "confrim": True, "name": "Opening Hours"},
            "not an action",
        ],
    )
    with pytest.raises(CommandError) as refused:
        run(str(path))
    message = str(refused.value)
    assert "bad.yaml, action 2 (Opening Hours): unknown field(s) confrim" in message
    assert "bad.yaml, action 3: must be an object of fields" in message
    assert not Action.objects.exists()


def test_definition_problems_name_action_and_field(tmp_path):
    path = write(
        tmp_path / "bad.yaml",
        [
            {**ORDER_STATUS, "headers": {"Authorization": "Bearer abcdef0123456789abcdef0123"}},
            {**FAQ, "name": "Opening Hours", "timeout_seconds": 600},
        ],
    )
    with pytest.raises(CommandError) as refused:
        run(str(path))
    message = str(refused.value)
    assert (
        "bad.yaml, action 1 (order_status): headers: Authorization: looks like a secret" in message
    )
    assert "bad.yaml, action 2 (Opening Hours): name: Lower-case letters" in message
    assert (
        "bad.yaml, action 2 (Opening Hours): timeout_seconds: Ensure this value is less than or equal to 30.0."
        in message
    )
    assert not Action.objects.exists()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.yaml", "actions: [name: x\n", "not valid YAML"),
        ("a.json", "[{", "not valid JSON"),
        ("a.yaml", "actions: []\n", "holds no action"),
        ("a.yaml", "name: order_status\n", "expected a list of actions"),
        ("a.txt", "[]", "not a YAML (.yaml, .yml) or JSON (.json) file"),
    ],
)
def test_a_file_that_is_no_list_of_actions_is_refused(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CommandError, match="Nothing imported") as refused:
        run(str(path))
    assert expected in str(refused.value)


def test_a_missing_file_is_refused_plainly(tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        run(str(tmp_path / "nowhere.yaml"))


def test_actions_for_a_site_are_updated_apart_from_shared_ones(tmp_path):
    site = Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")
    path = write(tmp_path / "a.yaml", [ORDER_STATUS])
    run(str(path))
    run(str(path), "--site", site.key)
    assert sorted(Action.objects.values_list("site_id", flat=True), key=str) == sorted(
        [None, site.pk], key=str
    )
    named = write(tmp_path / "b.yaml", [{**FAQ, "site": site.key}, {**FAQ, "site": "site_nope"}])
    with pytest.raises(
        CommandError, match=r"action 2 \(opening_hours\): site: no site with key 'site_nope'"
    ):
        run(str(named))
    with pytest.raises(CommandError, match="No site with key 'site_nope'"):
        run(str(path), "--site", "site_nope")


def test_the_sample_imports_marked_and_leaves_with_remove_sample(tmp_path, actions_settings):
    actions_settings(SAMPLE_BASE_URL="http://127.0.0.1:8123/")
    run(str(write(tmp_path / "own.yaml", [FAQ])))
    out = run("--sample")
    assert "4 created" in out
    samples = {a.name: a for a in Action.objects.filter(is_sample=True)}
    assert set(samples) == {"order_status", "order_status_by_email", "cancel_order", "latest_order"}
    assert samples["order_status"].url == (
        "http://127.0.0.1:8123/sample-shop/api/orders/{order_id}?customer={customer.id}"
    )
    assert samples["order_status_by_email"].audience == "public"
    assert samples["cancel_order"].confirm is True and samples["cancel_order"].method == "POST"
    assert samples["order_status"].triggers
    assert "4 unchanged" in run("--sample")

    assert "Removed 4 sample action(s)." in run("--remove-sample")
    assert list(Action.objects.values_list("name", flat=True)) == ["opening_hours"]


def test_the_sample_never_overwrites_an_action_of_the_companys_own(tmp_path):
    run(str(write(tmp_path / "own.yaml", [ORDER_STATUS])))
    out = run("--sample")
    assert "kept order_status: an action of your own has this name" in out
    own = Action.objects.get(name="order_status")
    assert (own.is_sample, own.url) == (False, ORDER_STATUS["url"])
    run("--remove-sample")
    assert Action.objects.filter(name="order_status").exists()


def test_nothing_to_do_is_an_error():
    with pytest.raises(CommandError, match="Give at least one FILE"):
        run()
