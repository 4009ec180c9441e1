"""The SparkSession of ``recsvc train --engine spark`` (see :mod:`recsvc.export.spark`).

The session logic lives with the export because online code may not import ``training``;
the offline job uses the same one so train and export start Spark identically.
"""

from __future__ import annotations

from recsvc.export.spark import SparkSettings, open_spark, parse_spark_conf, spark_version

__all__ = ["SparkSettings", "open_spark", "parse_spark_conf", "spark_version"]
