"""Transports: the Unix socket (and, later, the HTTP bridge). They know nothing of the domain."""
