"""`python manage.py create_api_key --name NAME`: make an API key and print its secret once.

The secret is the last line of stdout, alone, so a script can take it with `tail -n 1`.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat import selectors
from chat.api import keys
from chat.models import ApiScope, Site

DEFAULT_SCOPES = f"{ApiScope.CHAT},{ApiScope.OPENAI}"


class Command(BaseCommand):
    help = "Create an API key for a company back end; prints the secret once, on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who uses the key, e.g. 'Shop backend'.")
        parser.add_argument(
            "--site",
            metavar="SITE_KEY",
            help="The site key (as in the widget's embed tag) whose bot profile and limits "
            "the key's conversations use; default: the desk's own profile.",
        )
        parser.add_argument(
            "--scopes",
            default=DEFAULT_SCOPES,
            help=f"Comma-separated, from: {', '.join(ApiScope.values)} (default: %(default)s).",
        )
        parser.add_argument(
            "--rpm",
            type=int,
            help="Requests a minute; 0 for no limit "
            f"(default: {settings.API['DEFAULT_REQUESTS_PER_MINUTE']}).",
        )
        parser.add_argument(
            "--tokens-per-day",
            type=int,
            help="Prompt and completion tokens a day (UTC); 0 for no limit "
            f"(default: {settings.API['DEFAULT_TOKENS_PER_DAY']}).",
        )

    def handle(self, *args, **options):
        site = None
        if options["site"]:
            site = selectors.site_by_key(site_key=options["site"], active_only=False)
            if site is None:
                known = ", ".join(Site.objects.order_by("key").values_list("key", flat=True)[:20])
                raise CommandError(
                    f"No site with key {options['site']!r}. Use a key from admin (Sites) "
                    f"{f'such as {known}' if known else '(there is none yet)'}, "
                    "or leave out --site for the desk's own profile."
                )
        try:
            key, secret = keys.create_api_key(
                name=options["name"],
                site=site,
                scopes=options["scopes"].split(","),
                requests_per_minute=options["rpm"],
                tokens_per_day=options["tokens_per_day"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Created API key {key.name!r} ({key.prefix}…)")
        self.stdout.write(f"  site: {site.key if site else '(none: the default profile)'}")
        self.stdout.write(f"  scopes: {', '.join(key.scopes)}")
        self.stdout.write(
            f"  limits: {_limit(key.requests_per_minute, 'requests a minute')}, "
            f"{_limit(key.tokens_per_day, 'tokens a day')}"
        )
        self.stdout.write("The secret, shown only now (send it as 'Authorization: Bearer <key>'):")
        self.stdout.write(secret)


def _limit(value: int, unit: str) -> str:
    return f"{value} {unit}" if value else f"no limit on {unit}"
