"""The SQLite store (apsw). The only package that imports apsw."""

from maild.store.db import Connection, IntegrityError, Store, format_ts, open_store, utcnow

__all__ = ["Connection", "IntegrityError", "Store", "format_ts", "open_store", "utcnow"]
