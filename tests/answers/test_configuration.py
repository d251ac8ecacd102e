"""What answers read of bot profiles, sites and actions, kept per process while the version token
in Redis stays the same (chat/answering/configuration.py): the real database and Redis."""

import io
import uuid

import pytest
import redis
from django.core.management import call_command

from chat.answering import configuration
from chat.answering.prompt import read_answer_context
from chat.models import Action, BotProfile, Conversation, Site
from runtime import version_tokens
from runtime.redis_client import get_sync_redis


def profile(**fields) -> BotProfile:
    """The default profile (the migrations install one), with these fields."""
    shop = BotProfile.objects.filter(is_default=True).first() or BotProfile(
        name="Shop", is_default=True
    )
    shop.system_prompt = "You help the customers of {site_name}."
    for name, value in fields.items():
        setattr(shop, name, value)
    shop.save()
    return shop


def conversation(site: Site | None = None) -> Conversation:
    return Conversation(site=site, language="en")


def token() -> str:
    return get_sync_redis().get(configuration.KEY) or ""


@pytest.mark.django_db
def test_a_second_answer_reads_nothing_from_the_database(django_assert_num_queries):
    site = Site.objects.create(name="Acme", allowed_origins="https://acme.example")
    profile(max_tokens=111)
    with django_assert_num_queries(3):  # profile, site, actions
        first = read_answer_context(conversation(site))
    with django_assert_num_queries(0):
        second = read_answer_context(conversation(site))
    assert second == first
    assert "Acme" in second.parts.system_prompt and second.parts.sampling["max_tokens"] == 111
    with django_assert_num_queries(2):  # no site: read for itself (profile, actions)
        read_answer_context(conversation())


@pytest.mark.django_db
def test_an_edit_in_this_process_is_read_at_once_even_before_it_commits():
    shop = profile(max_tokens=111)
    assert read_answer_context(conversation()).parts.sampling["max_tokens"] == 111
    shop.max_tokens = 222
    shop.save()  # inside the test's transaction: never committed
    assert read_answer_context(conversation()).parts.sampling["max_tokens"] == 222


@pytest.mark.django_db(transaction=True)
def test_a_committed_edit_changes_the_token_every_process_reads():
    shop = profile(max_tokens=111)
    read_answer_context(conversation())
    before = token()
    shop.system_prompt = "Only {site_name}'s parcels."
    shop.save()
    assert token() not in ("", before)
    site = Site.objects.create(name="Acme")
    after_profile = token()
    assert after_profile != before
    site.delete()
    after_site = token()
    assert after_site != after_profile
    call_command("import_actions", "--sample", stdout=io.StringIO())
    assert Action.objects.exists() and token() != after_site


@pytest.mark.django_db
def test_another_process_s_edit_is_read_once_the_token_changes():
    """Here the row changes behind this process's back (a queryset update sends no signal),
    and the token changes as another process's committed edit changes it."""
    shop = profile(max_tokens=111)
    assert read_answer_context(conversation()).parts.sampling["max_tokens"] == 111
    BotProfile.objects.filter(pk=shop.pk).update(max_tokens=222)
    assert read_answer_context(conversation()).parts.sampling["max_tokens"] == 111  # its copy
    get_sync_redis().set(configuration.KEY, uuid.uuid4().hex)
    assert read_answer_context(conversation()).parts.sampling["max_tokens"] == 222


@pytest.mark.django_db
def test_a_copy_is_read_again_after_its_maximum_age(settings, monkeypatch):
    settings.CHAT = {**settings.CHAT, "CONFIGURATION_MAX_AGE_SECONDS": 30}
    clock = [1000.0]
    monkeypatch.setattr(configuration.time, "monotonic", lambda: clock[0])
    shop = profile(max_tokens=111)
    read_answer_context(conversation())
    BotProfile.objects.filter(pk=shop.pk).update(max_tokens=222)  # no token changes
    clock[0] += 29
    assert read_answer_context(conversation()).parts.sampling["max_tokens"] == 111
    clock[0] += 2
    assert read_answer_context(conversation()).parts.sampling["max_tokens"] == 222


@pytest.mark.django_db
def test_no_copies_with_a_maximum_age_of_zero(settings, django_assert_num_queries):
    settings.CHAT = {**settings.CHAT, "CONFIGURATION_MAX_AGE_SECONDS": 0}
    profile()
    for _ in range(2):
        with django_assert_num_queries(2):  # profile and actions (no site)
            read_answer_context(conversation())


@pytest.mark.django_db
def test_without_redis_every_answer_reads_the_database(monkeypatch, django_assert_num_queries):
    profile()
    read_answer_context(conversation())

    class Unreachable:
        def get(self, key):
            raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(version_tokens, "get_sync_redis", Unreachable)
    for _ in range(2):
        with django_assert_num_queries(2):
            read_answer_context(conversation())
