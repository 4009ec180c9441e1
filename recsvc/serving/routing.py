"""Who gets what: a user's experiment variant, the model it pins, the artwork policies.

The one place for these choices. Recommend and SelectArtwork make them when they serve;
RecordEvents makes them again to find the policy whose statistics an impression or click
moves, so both sides always agree on the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from recsvc.bandit.base import ArtworkPolicy
from recsvc.pipeline import ServingModel, UserInput
from recsvc.pipeline.features import merge_user_features
from recsvc.serving.hotswap import ModelHolder

if TYPE_CHECKING:  # the server imports the router only when experiments are on
    from recsvc.experiments.assignment import Assignment
    from recsvc.experiments.router import ExperimentRouter

log = logging.getLogger("recsvc.serving")
NO_OVERRIDES: Mapping[str, Any] = MappingProxyType({})


class Routing:
    """Experiment assignment and policy choice over the live model (``holder``).

    ``router`` is None when experiments are off (``--no-experiments`` or no store): every
    user then gets the defaults. ``policy_name`` is the server's artwork policy.
    """

    def __init__(
        self, holder: ModelHolder, router: ExperimentRouter | None, policy_name: str
    ) -> None:
        self.holder = holder
        self.router = router
        self.policy_name = policy_name

    def assign(self, user_id: str, features: Mapping[str, str]) -> Assignment | None:
        """The user's variant in the first running experiment that takes them, or None
        (no experiments, anonymous user, not in any, or the router failed)."""
        if self.router is None or not user_id:
            return None
        try:
            return self.router.assign(user_id, features)
        except Exception as exc:  # an experiment bug must not take serving down
            log.error("experiment assignment failed", extra={"error": str(exc)})
            return None

    def assign_request(self, user: UserInput) -> Assignment | None:
        """:meth:`assign` on what a request knows of the user: the stored profile, then
        the request's attributes, then its region (later ones win)."""
        if self.router is None:
            return None  # skip building the features
        features = merge_user_features(user.profile, user.region, user.attributes)
        return self.assign(user.user_id, features)

    def model_for(self, overrides: Mapping[str, Any]) -> ServingModel:
        """The model a variant pins (``model_version``) once it is loaded, else the live one."""
        version = overrides.get("model_version")
        if version:
            found = self.holder.version(str(version))
            if found is not None:
                return found
        return self.holder.model

    def policies(
        self, model: ServingModel, overrides: Mapping[str, Any]
    ) -> tuple[ArtworkPolicy, ArtworkPolicy]:
        """(policy to serve with, the default policy to fall back on). The variant's
        ``bandit_policy`` wins over the server's; one that cannot be built is logged and
        replaced by the default."""
        name = str(overrides.get("bandit_policy") or self.policy_name)
        try:
            policy = model.policy(name)
        except Exception as exc:
            log.error("bandit policy %r unavailable: %s", name, exc)
            policy = model.policy("default")
        return policy, model.policy("default")


def overrides_of(assignment: Assignment | None) -> Mapping[str, Any]:
    """The serving overrides of ``assignment`` (none without one). Read only."""
    return assignment.overrides if assignment is not None else NO_OVERRIDES
