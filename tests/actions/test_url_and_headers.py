"""The URL a call goes to: every value encoded, so no argument changes the host, the path's
segments or the query; `{customer.id}` only from the verified customer; the allow-list. And
headers: `${NAME}` from the environment at call time, a missing one refusing the call."""

from urllib.parse import unquote, urlsplit

import pytest

from chat.actions import headers, url_template
from chat.actions.url_template import HostNotAllowed, RenderError

TEMPLATE = "https://shop.example.com/api/orders/{order_id}/items?customer={customer.id}&q={q}"


def render(customer_id: str | None = "c-1", **arguments) -> str:
    return url_template.render(
        TEMPLATE, {"order_id": "A1001", "q": "x", **arguments}, customer_id=customer_id
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "../admin?x=1#",
        "evil.com/",
        "@evil.com",
        "//evil.com/x",
        "A1001/../../admin",
        "x?customer=someone-else",
        "x#frag",
        "%2e%2e%2fadmin",
        "a b&c=d",
        "ünïcode/日本",
    ],
)
def test_a_value_stays_inside_its_own_path_segment(hostile):
    url = render(order_id=hostile)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "shop.example.com")
    segments = parts.path.split("/")
    assert segments[:4] == ["", "api", "orders", segments[3]]
    assert segments[4:] == ["items"]
    assert unquote(segments[3]) == hostile  # the value arrives whole, as given
    assert parts.fragment == ""
    assert parts.query.split("&")[0] == "customer=c-1"


@pytest.mark.parametrize("hostile", ["1&customer=someone-else", "x#y", "a=b", "v?w"])
def test_a_value_stays_inside_its_own_query_value(hostile):
    parts = urlsplit(render(q=hostile))
    pairs = [pair.split("=", 1) for pair in parts.query.split("&")]
    assert [name for name, _ in pairs] == ["customer", "q"]
    assert unquote(pairs[1][1]) == hostile
    assert parts.fragment == ""


def test_every_reserved_character_is_encoded():
    url = render(order_id="/?#[]@!$&'()*+,;=:")
    encoded = urlsplit(url).path.split("/")[3]
    assert encoded == "%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A"


@pytest.mark.parametrize("collapsing", ["", ".", ".."])
def test_a_path_value_that_clients_would_collapse_is_refused(collapsing):
    with pytest.raises(RenderError, match="cannot be a part of the path"):
        render(order_id=collapsing)


def test_a_dot_value_in_the_query_is_harmless_and_kept():
    assert render(q="..").endswith("&q=..")


def test_the_customer_id_comes_only_from_the_customer():
    # Arguments named like the placeholder are never read for it.
    url = url_template.render(
        TEMPLATE,
        {"order_id": "A1001", "q": "x", "customer.id": "victim", "customer": {"id": "victim"}},
        customer_id="c-42",
    )
    assert "victim" not in url
    assert "customer=c-42" in url


def test_without_a_customer_id_a_template_that_needs_one_is_refused():
    with pytest.raises(RenderError, match="needs the verified customer's id"):
        url_template.render(TEMPLATE, {"order_id": "A1001", "q": "x"}, customer_id=None)


def test_the_customer_id_is_encoded_too():
    url = render(customer_id="c-1&q=evil#")
    assert urlsplit(url).query == "customer=c-1%26q%3Devil%23&q=x"


def test_values_are_written_as_json_writes_them():
    template = "https://s.example.com/{n}/{flag}/{price}"
    url = url_template.render(template, {"n": 7, "flag": True, "price": 2.5}, customer_id=None)
    assert url == "https://s.example.com/7/true/2.5"


def test_objects_and_missing_arguments_are_refused():
    with pytest.raises(RenderError, match="a dict cannot go into a URL"):
        render(order_id={"x": 1})
    with pytest.raises(RenderError, match="argument q is missing"):
        url_template.render(TEMPLATE, {"order_id": "A1"}, customer_id="c")


def test_the_allow_list_refuses_other_hosts_and_ports(actions_settings):
    actions_settings(ALLOWED_HOSTS=["api.example.com"])
    with pytest.raises(HostNotAllowed, match="shop.example.com is not in ACTIONS_ALLOWED_HOSTS"):
        render()
    actions_settings(ALLOWED_HOSTS=["SHOP.example.com:443"])
    assert render().startswith("https://shop.example.com/")
    actions_settings(ALLOWED_HOSTS=["shop.example.com:8443"])
    with pytest.raises(HostNotAllowed):
        render()


# --- headers --------------------------------------------------------------------------------------


def test_variables_are_read_from_the_environment_at_each_call(monkeypatch):
    wanted = {"Authorization": "Bearer ${SHOP_API_TOKEN}", "X-Tenant": "${TENANT}-eu"}
    monkeypatch.setenv("SHOP_API_TOKEN", "first")
    monkeypatch.setenv("TENANT", "acorn")
    assert headers.resolve(wanted) == {"Authorization": "Bearer first", "X-Tenant": "acorn-eu"}
    monkeypatch.setenv("SHOP_API_TOKEN", "rotated")
    assert headers.resolve(wanted)["Authorization"] == "Bearer rotated"


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_or_empty_variable_refuses_and_names_it(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("SHOP_API_TOKEN", raising=False)
    else:
        monkeypatch.setenv("SHOP_API_TOKEN", value)
    with pytest.raises(headers.MissingVariable) as missing:
        headers.resolve({"Authorization": "Bearer ${SHOP_API_TOKEN}"})
    assert missing.value.name == "SHOP_API_TOKEN"


def test_the_desks_own_secrets_are_never_read(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "the-desk-signing-key")
    with pytest.raises(headers.MissingVariable):
        headers.resolve({"X-Key": "${SECRET_KEY}"})


def test_the_sample_token_has_a_default_only_while_the_sample_shop_is_on(
    monkeypatch, actions_settings
):
    monkeypatch.delenv("SAMPLE_SHOP_TOKEN", raising=False)
    actions_settings(SAMPLE_SHOP=True, SAMPLE_SHOP_TOKEN="dev-token")
    assert headers.resolve({"A": "Bearer ${SAMPLE_SHOP_TOKEN}"}) == {"A": "Bearer dev-token"}
    actions_settings(SAMPLE_SHOP=False)
    with pytest.raises(headers.MissingVariable):
        headers.resolve({"A": "Bearer ${SAMPLE_SHOP_TOKEN}"})
