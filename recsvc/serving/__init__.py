"""The gRPC server: servicer, hot swap, store guard, auth, limits, metrics, workers.

A regular package (not a namespace one) so the layer checks see its modules; it imports
nothing itself, so ``recsvc.serving.X`` loads only X and what X needs.
"""
