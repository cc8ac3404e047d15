"""The SQLite store (apsw). The only package that imports apsw."""

from maild.store.db import Connection, Store, open_store, utcnow

__all__ = ["Connection", "Store", "open_store", "utcnow"]
