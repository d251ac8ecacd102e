"""The client's address: the peer unless a trusted proxy vouches for X-Forwarded-For, read
from the right; forged, garbage and IPv6 headers."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from runtime.client_ip import client_ip, parse_ip


def scope(peer, *forwarded, kind="websocket"):
    headers = [(b"host", b"desk.example.com")]
    headers += [(b"X-Forwarded-For", value.encode("latin-1")) for value in forwarded]
    return {"type": kind, "headers": headers, "client": [peer, 52000] if peer else None}


@pytest.fixture
def proxies(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.7", "fd00::/8"]


def test_without_trusted_proxies_the_peer_is_the_client_and_the_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = []
    assert client_ip(scope("198.51.100.9", "1.2.3.4")) == "198.51.100.9"
    assert client_ip(scope("198.51.100.9")) == "198.51.100.9"


def test_a_forged_header_from_an_untrusted_peer_is_ignored(proxies):
    assert client_ip(scope("198.51.100.9", "10.0.0.1, 1.2.3.4")) == "198.51.100.9"


def test_one_trusted_proxy_gives_the_address_it_saw(proxies):
    assert client_ip(scope("10.0.0.2", "203.0.113.5")) == "203.0.113.5"
    assert client_ip(scope("10.0.0.2", "203.0.113.5", kind="http")) == "203.0.113.5"


def test_what_the_client_wrote_left_of_the_proxys_entry_is_ignored(proxies):
    # The customer sent "X-Forwarded-For: 1.1.1.1, 10.9.9.9" to look like a trusted hop.
    assert client_ip(scope("10.0.0.2", "1.1.1.1, 10.9.9.9, 203.0.113.5")) == "203.0.113.5"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right(proxies):
    header = "1.1.1.1, 203.0.113.5, 192.0.2.7, 10.1.2.3"
    assert client_ip(scope("10.0.0.2", header)) == "203.0.113.5"


def test_repeated_headers_are_one_list_in_order(proxies):
    assert client_ip(scope("10.0.0.2", "1.1.1.1, 203.0.113.5", "10.4.4.4")) == "203.0.113.5"


def test_all_hops_trusted_gives_the_farthest(proxies):
    assert client_ip(scope("10.0.0.2", "10.3.3.3, 10.4.4.4")) == "10.3.3.3"
    assert client_ip(scope("10.0.0.2")) == "10.0.0.2"  # a proxy's own request, or no header


def test_garbage_stops_the_walk_at_the_last_address_a_trusted_hop_reported(proxies):
    assert client_ip(scope("10.0.0.2", "not-an-ip")) == "10.0.0.2"
    assert client_ip(scope("10.0.0.2", "<script>, 10.5.5.5")) == "10.5.5.5"
    assert client_ip(scope("10.0.0.2", "203.0.113.5, unknown")) == "10.0.0.2"
    assert client_ip(scope("10.0.0.2", ", ,")) == "10.0.0.2"
    assert client_ip(scope("10.0.0.2", "999.1.1.1")) == "10.0.0.2"


def test_ipv6_peers_and_entries(proxies):
    assert client_ip(scope("2001:db8::1", "203.0.113.5")) == "2001:db8::1"
    assert client_ip(scope("fd00::2", "2001:DB8:0:0::7")) == "2001:db8::7"
    assert client_ip(scope("fd00::2", "[2001:db8::7]:443")) == "2001:db8::7"
    assert client_ip(scope("10.0.0.2", "2001:db8::7, fd12::1")) == "2001:db8::7"


def test_ports_quotes_and_ipv4_mapped_addresses_are_normalised(proxies):
    assert client_ip(scope("10.0.0.2", "203.0.113.5:61000")) == "203.0.113.5"
    assert client_ip(scope("10.0.0.2", '"203.0.113.5"')) == "203.0.113.5"
    assert client_ip(scope("::ffff:198.51.100.9")) == "198.51.100.9"
    # A dual-stack listener reports the proxy as IPv4-mapped: still the trusted proxy.
    assert client_ip(scope("::ffff:10.0.0.2", "203.0.113.5")) == "203.0.113.5"


def test_no_peer_address_trusts_nothing_unless_a_unix_proxy_is_configured(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_ip(scope(None, "203.0.113.5")) == ""
    settings.TRUSTED_PROXIES = ["unix", "10.0.0.0/8"]
    assert client_ip(scope(None, "203.0.113.5, 10.0.0.9")) == "203.0.113.5"
    assert client_ip(scope(None)) == ""
    assert client_ip(scope("garbage", "203.0.113.5")) == ""


def test_headers_without_a_scope(proxies):
    raw = [(b"x-forwarded-for", b"203.0.113.5")]
    assert client_ip(raw, "10.0.0.2") == "203.0.113.5"
    assert client_ip({"X-Forwarded-For": "203.0.113.5"}, "10.0.0.2") == "203.0.113.5"
    assert client_ip({"HTTP_X_FORWARDED_FOR": "203.0.113.5"}, "198.51.100.1") == "198.51.100.1"


def test_an_explicit_peer_wins_over_the_scopes(proxies):
    assert client_ip(scope("198.51.100.9", "203.0.113.5"), "10.0.0.2") == "203.0.113.5"


def test_a_very_long_chain_is_cut(proxies):
    header = ", ".join(["203.0.113.5"] + ["10.0.0.1"] * 100)
    assert client_ip(scope("10.0.0.2", header)) == "10.0.0.1"


def test_a_bad_trusted_proxies_entry_is_a_configuration_error(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "proxy.internal"]
    with pytest.raises(ImproperlyConfigured, match="proxy.internal"):
        client_ip(scope("10.0.0.2", "203.0.113.5"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5 ", "203.0.113.5"),
        ("203.0.113.5:8080", "203.0.113.5"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:8080", "2001:db8::1"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("", None),
        ("unknown", None),
        ("_hidden", None),
        ("203.0.113", None),
        ("1.2.3.4.5", None),
        ("2001:db8::1::2", None),
        ("203.0.113.5/24", None),
        ("\x00\xff", None),
    ],
)
def test_parse_ip(text, expected):
    address = parse_ip(text)
    assert (str(address) if address is not None else None) == expected
