"""Artwork personalization: which variant of each item a user sees.

- ``base``: the shared policy hook (ArtworkPolicy, ArtworkContext, ArtworkDecision).
- ``registry``: ``make_policy(name, bundle, **params)``: ``default``, ``ts``, ``ts-item``,
  ``lints``.
- ``thompson``: Beta-Bernoulli Thompson sampling per (item, variant, context bucket).
- ``linear``: linear Thompson sampling on user features (CF taste, region, segment) × theme.
- ``variants``: the padded per-request variant layout and the Monte Carlo choice.
- ``ope``, ``logs``, ``offline``: off-policy estimators, log readers (OBD, our exposure
  logs) and train-on-a-split evaluation behind ``recsvc bandit evaluate``.
- ``simulate``: a storefront with known click truth (tests and the benchmark).
"""
