"""What each console page shows, computed from the store, the bundles and the servers.

Each module returns plain dicts/lists for a template; none of them knows about HTTP.
"""
