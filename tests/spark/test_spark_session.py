"""The SparkSession settings recsvc derives, and the driver's result cap turned into an
error that names what to raise (a real local[2] session)."""

from __future__ import annotations

from typing import Any

import pytest

from recsvc.errors import UsageError
from recsvc.export.spark import MAX_RESULT_SIZE, session_conf, to_driver

pytestmark = [pytest.mark.spark]


def test_the_result_cap_follows_the_driver_memory_given() -> None:
    assert session_conf({"spark.driver.memory": "8g"})[MAX_RESULT_SIZE] == "8g"
    mine = {"spark.driver.memory": "8g", MAX_RESULT_SIZE: "2g"}
    assert session_conf(mine)[MAX_RESULT_SIZE] == "2g"  # the user's own cap wins
    assert MAX_RESULT_SIZE not in session_conf({"spark.executor.memory": "4g"})  # Spark's 1g


def test_a_collect_past_the_result_cap_names_the_settings(spark: Any) -> None:
    frame = spark.range(0, 400_000, numPartitions=4).selectExpr("id", "repeat('x', 40) AS pad")
    assert to_driver(frame.limit(10), "ten rows").num_rows == 10
    # The cap is read when a job's tasks are scheduled, so the live context's conf applies.
    conf = spark.sparkContext._conf
    before = conf.get(MAX_RESULT_SIZE)
    conf.set(MAX_RESULT_SIZE, "1m")
    try:
        with pytest.raises(UsageError) as caught:
            to_driver(frame, "the test rows")
    finally:
        conf.set(MAX_RESULT_SIZE, before or "1g")
    message = str(caught.value)
    assert message.startswith("the test rows do not fit spark.driver.maxResultSize (")
    assert "spark.driver.memory=" in message and "\n" not in message
    assert to_driver(frame.limit(5), "five rows").num_rows == 5  # the session still works
