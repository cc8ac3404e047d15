"""The SQLite store (apsw). The only package that imports apsw."""

from maild.store.db import UNREAD_MOVED, Connection, IntegrityError, Store, format_ts, open_store, utcnow

__all__ = ["UNREAD_MOVED", "Connection", "IntegrityError", "Store", "format_ts", "open_store", "utcnow"]
