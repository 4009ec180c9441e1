"""Offline job: load and validate contract files, train models, build the FAISS index and bundle.

Never imports ``recsvc`` (DESIGN.md: a stage imports only the stages it consumes).
"""
