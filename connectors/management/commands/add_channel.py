"""`python manage.py add_channel KIND --site SITE_KEY --set key=value …`: connect a channel.

Checks the settings for the kind (connectors/kinds.py), creates the inbox, and prints what the
company must configure on the other side; where the kind has a callback URL, it is the last
line, alone. Secrets written `${ENV_NAME}` are read from the environment where they are used;
one given literally is stored, and printed masked.

    manage.py add_channel email --site site_… --set address=help@shop.example \\
        --set 'imap_url=imaps://help%40shop.example:${HELP_IMAP_PASS}@imap.shop.example/INBOX' \\
        --set 'smtp_url=smtp+starttls://help%40shop.example:${HELP_SMTP_PASS}@smtp.shop.example'
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat import selectors as chat_selectors
from chat.models import Inbox
from connectors import kinds, services


class Command(BaseCommand):
    help = "Connect a channel (e-mail, …) to a site; prints what to configure on the other side."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(kinds.KINDS), help="The kind of channel.")
        parser.add_argument("--site", required=True, metavar="SITE_KEY", help="The site's key.")
        parser.add_argument("--name", help="A name for staff (default: the kind and address).")
        parser.add_argument(
            "--set",
            dest="values",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="A setting of the kind; repeat for each. Secrets as ${ENV_NAME}.",
        )
        parser.add_argument(
            "--bot-mode",
            default=Inbox.BotMode.ANSWER,
            choices=services.BOT_MODES,
            help="answer (default): the bot answers; draft: the bot's answer waits for an "
            "agent to send it from the console; silent: every message waits for an agent.",
        )
        parser.add_argument(
            "--public-url",
            default=settings.CONNECTORS["PUBLIC_URL"],
            help="The desk's public address, for callback URLs (default: DESK_PUBLIC_URL).",
        )

    def handle(self, *args, **options):
        site = chat_selectors.site_by_key(site_key=options["site"], active_only=False)
        if site is None:
            raise CommandError(f"No site with key {options['site']!r} (see admin, Sites).")
        values = {}
        for item in options["values"]:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"--set takes key=value, not {item!r}")
            values[key.strip()] = value
        kind = options["kind"]
        # What names the channel on the other side: the mailbox, the WeCom account.
        handle = values.get("address") or values.get("open_kfid") or ""
        name = options["name"] or f"{kind} {handle}".strip()
        try:
            inbox = services.inbox_create(
                site=site, kind=kind, name=name, settings=values, bot_mode=options["bot_mode"]
            )
        except services.InvalidChannel as exc:
            raise CommandError(
                "The settings are not right:\n  " + "\n  ".join(exc.problems)
            ) from None
        self.stdout.write(f"Created inbox {inbox.pk} “{inbox.name}” for site {site.name}.")
        for key, value in kinds.masked(kind, inbox.settings).items():
            self.stdout.write(f"  {key} = {value}")
        base_url = options["public_url"].rstrip("/")
        for line in kinds.KINDS[kind].describe(inbox, base_url):
            self.stdout.write(line)
