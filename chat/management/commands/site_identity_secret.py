"""`python manage.py site_identity_secret SITE_KEY`: make a new identity secret for a site and
print it once.

The company's back end signs its customer tokens with it (docs/verified-customers.md). The
new secret replaces the old one at once. It is the last line of stdout, alone, so a script can
take it with `tail -n 1`; it is written nowhere else.
"""

from django.core.management.base import BaseCommand, CommandError

from chat import selectors, services
from chat.models import Site


class Command(BaseCommand):
    help = (
        "Make a new identity secret for a site (customer tokens are signed with it); the old "
        "one stops working. Prints the secret once, on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("site_key", metavar="SITE_KEY", help="The site's key, as in admin.")

    def handle(self, *args, **options):
        site = selectors.site_by_key(site_key=options["site_key"], active_only=False)
        if site is None:
            known = ", ".join(Site.objects.order_by("key").values_list("key", flat=True)[:20])
            raise CommandError(
                f"No site with key {options['site_key']!r}. Use a key from admin (Sites) "
                f"{f'such as {known}' if known else '(there is none yet)'}."
            )
        replaced = bool(site.identity_secret)
        secret = services.site_identity_secret_renew(site=site)
        self.stdout.write(f"Made a new identity secret for site {site.name!r} ({site.key}).")
        if replaced:
            self.stdout.write("  The previous secret no longer verifies customer tokens.")
        if not site.is_active:
            self.stdout.write(
                "  The site is switched off: its widget serves no one until it is on."
            )
        self.stdout.write(
            "Sign customer tokens with it (HS256; docs/verified-customers.md). "
            "Shown only now, keep it on your back end:"
        )
        self.stdout.write(secret)
