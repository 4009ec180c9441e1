"""The offline job on Apache Spark: the same contract in, the same bundle out.

``session`` starts or joins a SparkSession (local mode by default, a standalone master or
whatever ``--spark-conf`` names); ``data`` reads and validates the input contract on the
executors with the local job's rules; ``train`` fits implicit ALS with Spark MLlib,
computes candidates and validation NDCG on the executors and publishes the bundle through
:mod:`recsvc.bundle`. pyspark is an optional extra (``pip install recsvc[spark]``).
"""
