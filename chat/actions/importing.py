"""Action files into definitions: YAML or JSON, a list of actions or `{"actions": [...]}`.

Each action is an object of the fields in docs/actions.md (`name`, `description`,
`parameters`, `method`, `url`, `headers`, `timeout_seconds`, `audience`, `confirm`,
`confirm_text`, `result`, `triggers`, `enabled`) and optionally `site` (a site key; the
command's --site, else all sites). An unknown field is an error, so a misspelt `confrim` is
not silently dropped. `${ACTIONS_SAMPLE_BASE_URL}` at the start of a `url` becomes that
setting (the sample actions reach this desk's own sample shop through it).

Parsing only: whether each definition can be saved is the model's check, in
`services.actions_import`, which also does the writes.
"""

import json
from collections.abc import Callable
from pathlib import Path

import yaml
from django.conf import settings

from chat.actions.services import ACTION_FIELDS, ActionDefinition

SUFFIXES = {".yaml", ".yml", ".json"}
MAX_FILE_BYTES = 1_000_000
SAMPLE_BASE_URL = "${ACTIONS_SAMPLE_BASE_URL}"
_KNOWN = (*ACTION_FIELDS, "site")


class FileError(ValueError):
    """A file that cannot be read as actions at all, or definitions with problems."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read(
    path: Path,
    *,
    site_id: int | None,
    site_id_for: Callable[[str], int | None],
    is_sample: bool = False,
) -> list[ActionDefinition]:
    """The definitions in one file. `site_id`: for actions that name no site;
    `site_id_for(key)`: a site key's id, None for an unknown key; `is_sample`: the file is the
    shipped sample. FileError lists every problem found in the file."""
    entries = _entries(path)
    problems: list[str] = []
    definitions = []
    for number, entry in enumerate(entries, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"{path.name}, action {number}" + (f" ({name})" if isinstance(name, str) else "")
        if not isinstance(entry, dict):
            problems.append(f"{label}: must be an object of fields (name, description, ...)")
            continue
        unknown = sorted(str(key) for key in entry if key not in _KNOWN)
        if unknown:
            problems.append(
                f"{label}: unknown field(s) {', '.join(unknown)}; the fields are "
                f"{', '.join(_KNOWN)}"
            )
        action_site = site_id
        if entry.get("site") not in (None, ""):
            action_site = site_id_for(str(entry["site"]))
            if action_site is None:
                problems.append(f"{label}: site: no site with key {entry['site']!r}")
        fields = {key: value for key, value in entry.items() if key in ACTION_FIELDS}
        if isinstance(fields.get("url"), str) and fields["url"].startswith(SAMPLE_BASE_URL):
            base = settings.ACTIONS["SAMPLE_BASE_URL"].rstrip("/")
            fields["url"] = base + fields["url"][len(SAMPLE_BASE_URL) :]
        definitions.append(
            ActionDefinition(
                label=label,
                site_id=action_site,
                fields=fields,
                is_sample=is_sample,
                source=str(path),
            )
        )
    if problems:
        raise FileError(problems)
    return definitions


def _entries(path: Path) -> list:
    if path.suffix.lower() not in SUFFIXES:
        raise FileError([f"{path}: not a YAML (.yaml, .yml) or JSON (.json) file"])
    try:
        size = path.stat().st_size
        text = "" if size > MAX_FILE_BYTES else path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileError([f"{path}: {exc}"]) from exc
    if size > MAX_FILE_BYTES:
        raise FileError([f"{path}: larger than {MAX_FILE_BYTES} bytes"])
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise FileError([f"{path}: not valid {path.suffix[1:].upper()}: {exc}"]) from exc
    if isinstance(data, dict) and set(data) == {"actions"}:
        data = data["actions"]
    if not isinstance(data, list):
        raise FileError([f"{path}: expected a list of actions, or an object with one key, actions"])
    if not data:
        raise FileError([f"{path}: holds no action"])
    return data
