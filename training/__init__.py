"""Offline job: load and validate contract files, train models, build the FAISS index and bundle.

May import ``recsvc`` (it writes bundles through ``recsvc.bundle``) and ``feature_store``;
online code never imports this package (docs/architecture.md, "Layers").
"""
