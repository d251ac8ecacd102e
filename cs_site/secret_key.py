"""A per-installation secret key kept in a private file, for runs without SECRET_KEY."""

import os
import secrets
import tempfile
from pathlib import Path


def secret_key_file(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")  # mode 0600
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
        try:
            # A hard link appears whole or not at all, and fails if the key exists already:
            # processes starting together all end up reading the one key that won.
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()
