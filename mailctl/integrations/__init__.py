"""Client integrations: `mailctl integrate` (engine, clients, config files), the blurb, doctor's checks.

Deliberately empty: `mailctl hook` imports only `record` from here and must stay light.
"""
