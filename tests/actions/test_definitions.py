"""What makes an action savable: its parameters checked as a JSON Schema, its URL template,
headers (no stored secrets), templates and triggers; each problem named with its field, in
the model's check and in admin."""

import html

import pytest
from django.core.exceptions import ValidationError

from chat.actions import services
from chat.actions.models import Action
from chat.models import Site
from tests.actions.helpers import make_action


def problems_of(action: Action) -> dict[str, list[str]]:
    try:
        action.full_clean()
    except ValidationError as exc:
        return exc.message_dict
    return {}


@pytest.mark.django_db
def test_a_complete_action_passes_every_check():
    assert problems_of(make_action()) == {}


# --- parameters: a JSON Schema, checked as one -------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"type": "objekt"}, "is not a valid JSON Schema"),
        ({"type": "object", "properties": {"n": {"type": "integr"}}}, "$.properties.n.type"),
        ({"type": "object", "required": "order_id"}, "is not a valid JSON Schema"),
        ([{"type": "string"}], "must be a JSON Schema object"),
        ({"type": "string"}, 'must describe an object: "type": "object"'),
        (
            {"type": "object", "properties": {"customer": {"type": "string"}}},
            "parameter 'customer' is reserved",
        ),
        (
            {"type": "object", "properties": {"order id": {"type": "string"}}},
            "a name is letters, digits and _",
        ),
        (
            {"type": "object", "properties": {}, "required": ["order_id"]},
            "required names no parameter under properties: order_id",
        ),
        (
            {
                "type": "object",
                "properties": {"x": {"$ref": "https://schemas.example.com/x.json"}},
            },
            "$ref may point only inside the schema",
        ),
    ],
)
def test_parameters_that_are_no_usable_schema_are_refused(parameters, expected):
    found = problems_of(make_action(parameters=parameters, url="https://shop.example.com/x"))
    assert any(expected in message for message in found["parameters"]), found


# --- url ----------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://shop.example.com/{order_id}", "must start with http:// or https://"),
        ("https://{order_id}.example.com/x", "cannot have placeholders in its host"),
        ("https://user:pw@shop.example.com/{order_id}", "cannot hold a user name or password"),
        ("https://shop.example.com/{order_id}#top", "cannot have a #fragment"),
        ("https://shop.example.com/{order_number}", "{order_number} names no parameter"),
        ("https://shop.example.com/{order_id}?t=${TOKEN}", "works in headers only"),
        ("https://shop.example.com/{order_id.__class__}", "names no parameter"),
        ("https://shop.example.com/{0}", "is not a placeholder"),
        ("https://shop.example.com/{order_id", "opens or closes no placeholder"),
        ("", "is required"),
    ],
)
def test_url_templates_that_could_misroute_are_refused(url, expected):
    found = problems_of(make_action(url=url))
    assert any(expected in message for message in found["url"]), found


@pytest.mark.django_db
def test_a_url_placeholder_must_be_a_required_scalar_parameter():
    parameters = {
        "type": "object",
        "properties": {"note": {"type": "string"}, "tags": {"type": "array"}},
        "required": ["tags"],
    }
    found = problems_of(
        make_action(parameters=parameters, url="https://s.example.com/{note}/{tags}")
    )
    assert "{note} must be a required parameter (list it in required)" in found["url"]
    assert any("{tags} must be a string, integer, number or boolean" in m for m in found["url"])


@pytest.mark.django_db
def test_a_public_action_cannot_use_the_customer_id():
    found = problems_of(make_action(audience=Action.Audience.PUBLIC))
    assert found["url"] == [
        "{customer.id} needs audience verified: a public action has no customer id"
    ]


@pytest.mark.django_db
def test_the_host_must_be_allowed_when_an_allow_list_is_set(actions_settings):
    actions_settings(ALLOWED_HOSTS=["api.example.com", "127.0.0.1:8000"])
    found = problems_of(make_action())
    assert any("host shop.example.com is not in ACTIONS_ALLOWED_HOSTS" in m for m in found["url"])
    assert problems_of(make_action(url="https://api.example.com/o/{order_id}")) == {}
    assert problems_of(make_action(url="http://127.0.0.1:8000/o/{order_id}")) == {}
    assert "url" in problems_of(make_action(url="http://127.0.0.1:8001/o/{order_id}"))


# --- headers: secrets come from the environment ----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer sk_live_51HxQ2aBcDeFgHiJkLmNoP"}, "looks like a secret"),
        ({"X-Api-Key": "hunter2"}, "looks like a secret"),
        ({"X-Anything": "Basic dXNlcjpwYXNz"}, "looks like a secret"),
        ({"X-Id": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"}, "looks like a secret"),
        ({"Authorization": "Bearer $TOKEN"}, "looks like a secret"),
        ({"Authorization": "Bearer ${SECRET_KEY}"}, "is the desk's own secret"),
        ({"X-Token": "${token-name}"}, "write an environment variable as ${NAME}"),
        ({"Host": "evil.example.com"}, "set by the desk from the request"),
        ({"Bad Name": "x"}, "is not a header name"),
        ({"X-Line": "a\r\nX-Injected: 1"}, "one line"),
        ({"X-Number": 5}, "the value must be text"),
        (["Authorization"], "must be a JSON object"),
    ],
)
def test_headers_refuse_stored_secrets_and_unsafe_values(headers, expected):
    found = problems_of(make_action(headers=headers))
    assert any(expected in message for message in found["headers"]), found


@pytest.mark.django_db
def test_headers_naming_environment_variables_are_fine():
    headers = {
        "Authorization": "Bearer ${SHOP_API_TOKEN}",
        "X-Api-Key": "${SHOP_KEY}",
        "Accept-Language": "en",
    }
    assert problems_of(make_action(headers=headers)) == {}


# --- result, confirm_text, triggers ---------------------------------------------------------------


@pytest.mark.django_db
def test_templates_allow_plain_names_only():
    found = problems_of(
        make_action(
            result="Order {order_id!r}: {status.__class__.__mro__[1]}",
            confirm=True,
            confirm_text="Cancel {order_number}?",
        )
    )
    assert any("{order_id!r} is not a placeholder" in m for m in found["result"])
    assert any("{status.__class__.__mro__[1]} is not a placeholder" in m for m in found["result"])
    assert found["confirm_text"] == [
        "{order_number} names no parameter (it shows the call's arguments)"
    ]
    assert problems_of(make_action(result="Order {order.id}: {order.status}")) == {}


@pytest.mark.django_db
def test_a_confirm_text_without_confirm_is_refused():
    # A write whose author wrote the question but forgot to ask it.
    found = problems_of(make_action(confirm_text="Cancel order {order_id}?"))
    assert found["confirm_text"] == ["is only asked when confirm is on"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("triggers", "expected"),
    [
        (
            [{"pattern": "A\\d{4}", "parameter": "order_id"}],
            "exactly one group ( ) around the value, it has 0",
        ),
        ([{"pattern": "(A)(\\d{4})", "parameter": "order_id"}], "it has 2"),
        ([{"pattern": "(A\\d{4}", "parameter": "order_id"}], "the pattern does not compile"),
        ([{"pattern": "(A\\d{4})", "parameter": "order"}], "'order' names no parameter"),
        ([{"pattern": "(A\\d{4})"}], 'must be {"pattern": "...", "parameter": "..."}'),
        ({"pattern": "(A\\d{4})", "parameter": "order_id"}, "must be a list"),
        ([{"pattern": "(" + "a" * 400 + ")", "parameter": "order_id"}], "longer than 300"),
    ],
)
def test_triggers_must_compile_with_one_group_for_a_parameter(triggers, expected):
    found = problems_of(make_action(triggers=triggers))
    assert any(expected in message for message in found["triggers"]), found


@pytest.mark.django_db
def test_a_trigger_with_other_groups_unnamed_is_fine():
    triggers = [{"pattern": "(?i)(?:order|bestelling)\\s*#?\\s*(A\\d{4})", "parameter": "order_id"}]
    assert problems_of(make_action(triggers=triggers)) == {}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Order Status"),
        ("timeout_seconds", 0.1),
        ("timeout_seconds", 120),
        ("method", "TRACE"),
        ("audience", "everyone"),
    ],
)
def test_field_bounds_hold(field, value):
    assert field in problems_of(make_action(**{field: value}))


# --- names are unique per site ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_name_is_unique_per_site_and_among_shared_actions():
    site = Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")
    services.action_save(action=make_action())
    services.action_save(action=make_action(site=site))  # a site's own may share the name
    with pytest.raises(ValidationError) as shared:
        services.action_save(action=make_action())
    assert shared.value.message_dict["name"] == [
        "An action named order_status already exists for all sites."
    ]
    with pytest.raises(ValidationError) as own:
        services.action_save(action=make_action(site=site))
    assert own.value.message_dict["name"] == [
        "An action named order_status already exists for this site."
    ]
    assert Action.objects.count() == 2


@pytest.mark.django_db
def test_saving_checks_the_schema_whatever_calls_it():
    with pytest.raises(ValidationError) as refused:
        services.action_save(action=make_action(parameters={"type": 5}))
    assert "parameters" in refused.value.message_dict
    assert not Action.objects.exists()


# --- admin ----------------------------------------------------------------------------------------


def admin_form(**changes) -> dict:
    form = {
        "name": "order_status",
        "site": "",
        "description": "Look up an order.",
        "enabled": "on",
        "method": "GET",
        "url": "https://shop.example.com/api/orders/{order_id}?customer={customer.id}",
        "headers": '{"Authorization": "Bearer ${SHOP_API_TOKEN}"}',
        "timeout_seconds": "5",
        "parameters": '{"type": "object", "properties": {"order_id": {"type": "string"}}, '
        '"required": ["order_id"]}',
        "audience": "verified",
        "confirm_text": "",
        "result": "Order {order_id}: {status}",
        "triggers": "[]",
    }
    form.update(changes)
    return form


@pytest.mark.django_db
def test_admin_saves_a_valid_action(admin_client):
    response = admin_client.post("/admin/chat/action/add/", admin_form())
    assert response.status_code == 302, response.content.decode()[:2000]
    action = Action.objects.get()
    assert action.headers == {"Authorization": "Bearer ${SHOP_API_TOKEN}"}
    assert action.parameters["required"] == ["order_id"]


@pytest.mark.django_db
def test_admin_names_each_mistake_beside_its_field(admin_client):
    response = admin_client.post(
        "/admin/chat/action/add/",
        admin_form(
            parameters='{"type": "object", "properties": {"order_id": {"type": "string"}',
            headers='{"Authorization": "Bearer abc123abc123abc123abc123abc"}',
            triggers='[{"pattern": "A\\\\d{4}", "parameter": "order_id"}]',
        ),
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["parameters"][0].startswith("Not valid JSON: Expecting ',' delimiter at line 1")
    assert "looks like a secret" in errors["headers"][0]
    assert "exactly one group" in errors["triggers"][0]
    assert not Action.objects.exists()


@pytest.mark.django_db
def test_admin_lists_actions_and_shows_calls_read_only(admin_client):
    action = services.action_save(action=make_action())
    listing = admin_client.get("/admin/chat/action/")
    assert listing.status_code == 200
    assert b"shop.example.com" in listing.content  # the host column
    page = admin_client.get(f"/admin/chat/action/{action.pk}/change/")
    assert page.status_code == 200
    assert '"required": [\n    "order_id"\n  ]' in html.unescape(page.content.decode())
    calls = admin_client.get("/admin/chat/actioncall/?status__exact=ok")
    assert calls.status_code == 200
    assert admin_client.get("/admin/chat/actioncall/add/").status_code == 403
