"""Batch jobs for marketing: ``export`` (top-N per user) and ``audience`` (top users per item).

Both reuse the serving pipeline's operators (one place for every business rule), stream
in chunks with bounded memory, and publish their output atomically with a manifest.
"""
