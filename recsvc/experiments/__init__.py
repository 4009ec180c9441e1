"""A/B experiments: definitions, sticky assignment, the serving router and reports.

Serving uses :class:`ExperimentRouter` (``recsvc.experiments.router``); the CLI is
``recsvc experiments`` (``recsvc/commands/experiments.py``).
"""

from recsvc.experiments.assignment import Assignment, bucket_pair
from recsvc.experiments.definition import Experiment, ExperimentDefinitionError, Overrides
from recsvc.experiments.router import ExperimentRouter

__all__ = [
    "Assignment",
    "Experiment",
    "ExperimentDefinitionError",
    "ExperimentRouter",
    "Overrides",
    "bucket_pair",
]
