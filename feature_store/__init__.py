"""Online feature store: user profiles, recent events, bandit counters, exposure/event log.

``open_store(url)`` returns an :class:`OnlineStore` for ``sqlite:///PATH`` or
``redis://HOST:PORT/DB``. Imports neither ``training`` nor ``recsvc``.
"""
