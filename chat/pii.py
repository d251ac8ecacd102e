"""Personal data scrubbing for text that leaves the database (the fine-tuning export).

Each finding is replaced by a placeholder of its kind and counted:

    email   [EMAIL]     addresses, and the one the customer gave in a contact frame
    custom  [REDACTED]  the desk's own patterns, from the `PII_PATTERNS` setting
    phone   [PHONE]     numbers Google's libphonenumber (`phonenumbers`) finds valid, in
                        international form or local to a likely region (e.g. 13812345678 in CN)
    number  [NUMBER]    any other run of 6+ digits, also in groups ("4111 1111 1111 1111",
                        "555-0132"): order, card and account numbers, phones it did not know
    name    [NAME]      the name the customer gave in a contact frame, and its parts

Passes run in that order, so a later pass never sees what an earlier one replaced: an address
is one [EMAIL], not a [NAME] inside one. Short numbers ("2 items", "3 days") and dates stay.
Scrubbing is best effort, for names it only knows the customer's own: review a sample of an
export before it leaves the company.
"""

import functools
import re
from collections import Counter
from collections.abc import Iterable

import phonenumbers
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "custom": "[REDACTED]",
    "phone": "[PHONE]",
    "number": "[NUMBER]",
    "name": "[NAME]",
}

# ASCII only on purpose: with Unicode \w, "邮箱li.wei@example.cn" would swallow "邮箱".
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 6+ digits in a row, or digit groups joined by one space, dash or dot where every group after
# the first has 3+ digits: cards and grouped phones match, "2024-05-01" and "10 20 30" do not.
_DIGIT_RUN = re.compile(r"(?<!\d)\d{2,}(?:[ .-]\d{3,})*(?!\d)")
MIN_DIGITS = 6
# A name part shorter than this ("A.", "J") would replace letters all over the text.
MIN_NAME_PART = 2
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
# Regions whose local formats are tried besides the conversation's own (from its language
# tag, e.g. zh-CN, en-GB). Numbers written with +country code are found whatever the region.
DEFAULT_PHONE_REGIONS = ("US", "CN", "GB")
_LANGUAGE_REGIONS = {"zh": "CN", "en": "US", "de": "DE", "fr": "FR", "ja": "JP", "es": "ES"}


class Scrubber:
    """Scrubs texts of one conversation, adding up what it replaced in `counts`."""

    def __init__(
        self, *, names: Iterable[str] = (), emails: Iterable[str] = (), language: str = ""
    ):
        self.counts: Counter[str] = Counter()
        self._known_emails = _literal_pattern(e.strip() for e in emails if e and e.strip())
        self._names = _name_pattern(names)
        self._regions = phone_regions(language)
        self._custom = custom_patterns()

    def scrub(self, text: str) -> str:
        if not text:
            return text
        if self._known_emails is not None:
            text = self._sub("email", self._known_emails, text)
        text = self._sub("email", _EMAIL, text)
        for pattern in self._custom:
            text = self._sub("custom", pattern, text)
        text = self._scrub_phones(text)
        text = self._sub("number", _DIGIT_RUN, text, keep=_is_short)
        if self._names is not None:
            text = self._sub("name", self._names, text)
        return text

    def _sub(self, kind: str, pattern: re.Pattern, text: str, keep=None) -> str:
        def replace(match: re.Match) -> str:
            if keep is not None and keep(match.group()):
                return match.group()
            self.counts[kind] += 1
            return PLACEHOLDERS[kind]

        return pattern.sub(replace, text)

    def _scrub_phones(self, text: str) -> str:
        # The matcher is slow; a text with fewer digits than any phone number has none.
        if sum(ch.isdigit() for ch in text) < MIN_DIGITS:
            return text
        for region in self._regions:
            spans = [
                (m.start, m.end)
                for m in phonenumbers.PhoneNumberMatcher(
                    text, region, leniency=phonenumbers.Leniency.VALID
                )
            ]
            for start, end in reversed(spans):
                text = text[:start] + PLACEHOLDERS["phone"] + text[end:]
                self.counts["phone"] += 1
        return text


def scrub(
    text: str, *, names: Iterable[str] = (), emails: Iterable[str] = (), language: str = ""
) -> tuple[str, Counter[str]]:
    """`text` with personal data replaced, and the count of replacements per kind."""
    scrubber = Scrubber(names=names, emails=emails, language=language)
    return scrubber.scrub(text), scrubber.counts


def phone_regions(language: str) -> tuple[str, ...]:
    """The conversation's likely region first (the language tag's region, else its language's
    main one), then the defaults: a local number is read in the first region it is valid in."""
    parts = language.replace("_", "-").split("-") if language else []
    own = ""
    if len(parts) > 1 and len(parts[-1]) == 2 and parts[-1].isalpha():
        own = parts[-1].upper()
    elif parts:
        own = _LANGUAGE_REGIONS.get(parts[0].lower(), "")
    return tuple(dict.fromkeys(r for r in (own, *DEFAULT_PHONE_REGIONS) if r))


def custom_patterns() -> tuple[re.Pattern, ...]:
    """The desk's own patterns: `settings.PII_PATTERNS`, a list of regular expressions (for
    instance order numbers like r"ORD-[A-Z0-9]+"), each match replaced by [REDACTED]."""
    return _compile(tuple(getattr(settings, "PII_PATTERNS", [])))


@functools.lru_cache(maxsize=8)
def _compile(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ImproperlyConfigured(f"PII_PATTERNS: {pattern!r} is not a regex: {exc}") from exc
    return tuple(compiled)


def _is_short(digits: str) -> bool:
    return sum(ch.isdigit() for ch in digits) < MIN_DIGITS


def name_variants(name: str) -> set[str]:
    """The name as given and its parts: "Li Wei" → Li Wei, Li, Wei. A Chinese name written
    without spaces is matched whole, and from three characters on also without its one-character
    surname (王小明 → 小明), the usual way to address someone; single characters would match
    everywhere."""
    name = " ".join(name.split())
    if not name:
        return set()
    variants = {name}
    for part in re.split(r"[\s,]+", name):
        part = part.strip(".")
        if len(part) >= MIN_NAME_PART:
            variants.add(part)
        if _CJK.search(part) and len(part) >= 3:
            variants.add(part[1:])
    return variants


def _name_pattern(names: Iterable[str]) -> re.Pattern | None:
    variants: set[str] = set()
    for name in names:
        variants |= name_variants(name or "")
    if not variants:
        return None
    alternatives = []
    # Longest first, so "Li Wei" is one [NAME], not two.
    for variant in sorted(variants, key=len, reverse=True):
        escaped = re.escape(variant)
        # Chinese has no spaces between words: a word boundary would never match there.
        alternatives.append(escaped if _CJK.search(variant) else rf"\b{escaped}\b")
    # Not inside a placeholder: a customer called "Email" must not turn [EMAIL] into [[NAME]].
    return re.compile(rf"(?<!\[)(?:{'|'.join(alternatives)})(?!\])", re.IGNORECASE)


def _literal_pattern(values: Iterable[str]) -> re.Pattern | None:
    values = sorted(set(values), key=len, reverse=True)
    if not values:
        return None
    return re.compile("|".join(re.escape(v) for v in values), re.IGNORECASE)
