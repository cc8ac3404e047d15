"""The web mailbox on the HTTP bridge (/mail): pages, login cookies, CSRF, CSP and live updates.

It reads and writes only through the services; the bridge's gate mounts it (Host check) and
lends it its authenticator. See docs/web.md.
"""
