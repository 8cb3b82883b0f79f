"""`cureflow score --engine spark`: the nightly batch on PySpark, for portfolios beyond one machine.

Spark reads the four tables (parquet or csv files, local or on a cluster file system), tags every row with
its table and its position as read, and unions them. Rows are grouped by a hash bucket of `account_id` (about
`batch.chunk_size` accounts a bucket), so each account's rows of all four tables meet in one group;
`applyInPandas` turns a group back into the contract tables, validates them with `models.contract.validate`
and scores them with `ScoringBundle.score`: the same function and the same fitted bundle (loaded once on the
driver from the registry and broadcast) as the API and the local engine. Rows keep their order as read within
an account, so features, decisions and decision ids equal the local engine's. The overdue rows come back to the
driver, which applies the day's call capacity, records the decisions and writes the work queue exactly as the
local engine does (`serving.batch.run`).

Each group also reports the fingerprint of its validated tables; the run id digests them, so the same input
gives the same run id and a restarted Spark run records nothing twice in the decision log. A Spark run that
dies starts over (Spark retries failed tasks itself); the local engine's resumable parts are not used.

Parquet timestamps in nanoseconds are read as integers (`spark.sql.legacy.parquet.nanosAsLong`) and turned
back into UTC instants in the group, so no precision is lost. Spark reads files only: a database source is
read with the local engine.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.as_of import resolve_as_of
from models.bundle import ALT_COLUMNS, BATCH_COLUMNS
from models.contract import SPEC, ContractError, validate
from models.queue import in_priority_order
from models.vocab import TABLES
from serving import sources
from serving.batch.rows import Scored, plain_text, with_feature_text

NUMBER_COLUMNS = ("cure_probability", "priority", "expected_gain", "propensity", "_value", "_alt_value", "_alt_gain",
                  "_alt_propensity", "_call_rank")
EXTRA = (("_features", "string"), ("_kind", "string"), ("_fingerprint", "string"), ("_accounts", "long"))


def output_schema() -> str:
    """The Spark DDL of what a group returns: batch rows with their private columns, and one row per group."""
    columns = [f"`{c}` {'double' if c in NUMBER_COLUMNS else 'string'}" for c in (*BATCH_COLUMNS, *ALT_COLUMNS)]
    return ", ".join([*columns, *(f"`{c}` {kind}" for c, kind in EXTRA)])


def session(master: str, driver_memory: str):
    """The Spark session: spark-submit's master when there is one, else `master` (local[2] by default)."""
    from pyspark.sql import SparkSession  # optional and slow to import: only when the Spark engine runs

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    builder = SparkSession.builder.appName("cureflow-score")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not launched by spark-submit: run locally
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(master).config("spark.driver.memory", driver_memory).config(
            "spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
    spark = (builder.config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.legacy.parquet.nanosAsLong", "true")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _path_exists(spark, path: str) -> bool:
    """Whether a file or directory exists, on any file system Spark knows (local, HDFS, S3)."""
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(hadoop_path)


def read_table(spark, location: str, name: str):
    """One contract table as a Spark DataFrame of its contract columns (csv: all text, validated later)."""
    found = [f"{location.rstrip('/')}/{name}.{fmt}" for fmt in ("parquet", "csv")]
    found = [path for path in found if _path_exists(spark, path)]
    if len(found) != 1:
        problem = "table missing" if not found else "table present twice (parquet and csv)"
        raise ContractError(name, None, problem=f"{problem}: {name}.parquet or {name}.csv in {location}")
    if found[0].endswith(".parquet"):
        frame = spark.read.parquet(found[0])
    else:
        frame = (spark.read.option("header", True).option("inferSchema", False).option("multiLine", True)
                 .option("escape", '"').csv(found[0]))
    return frame.select(*[c for c in frame.columns if c in SPEC[name]])


def tagged_union(spark, location: str, buckets: int):
    """All four tables in one DataFrame: `_table`, `_row` (position as read), `_bucket` (hash of account_id)."""
    from pyspark.sql import functions as F  # optional and slow to import: only when the Spark engine runs

    frames, present = [], {}
    for name in TABLES:
        frame = _exact_instants(read_table(spark, location, name), name)
        present[name] = list(frame.columns)
        frames.append(frame.withColumn("_table", F.lit(name)).withColumn("_row", F.monotonically_increasing_id()))
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame, allowMissingColumns=True)
    return union.withColumn("_bucket", F.pmod(F.xxhash64("account_id"), F.lit(buckets))), present


def _exact_instants(frame, name: str):
    """Dates and instants read as nanosecond integers, as decimal text: in the union their column gains nulls,
    and pandas would hold integers with nulls as float64, which cannot keep nanoseconds exactly."""
    from pyspark.sql import functions as F  # optional and slow to import: only when the Spark engine runs
    from pyspark.sql.types import LongType  # optional and slow to import: only when the Spark engine runs

    for field in frame.schema.fields:
        if isinstance(field.dataType, LongType) and SPEC[name][field.name].kind in ("date", "timestamp"):
            frame = frame.withColumn(field.name, F.col(field.name).cast("string"))
    return frame


def group_tables(pdf: pd.DataFrame, present: dict[str, list[str]]) -> dict[str, pd.DataFrame]:
    """A group's rows as the four contract tables, in their order as read, dates and instants restored."""
    frames = {}
    for name in TABLES:
        rows = pdf[pdf["_table"] == name].sort_values("_row", kind="stable")
        frame = rows.loc[:, present[name]].reset_index(drop=True)
        for column, rule in SPEC[name].items():
            if rule.kind in ("date", "timestamp") and column in frame.columns:
                frame[column] = _instants(frame[column], utc=rule.kind == "timestamp")
        frames[name] = frame
    return frames


def _instants(values: pd.Series, utc: bool) -> pd.Series:
    """Nanosecond integers written as text (see `_exact_instants`) or Spark timestamps (naive, in the session
    time zone UTC) as datetimes, UTC-aware for instants; ISO text and dates are left for validate."""
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC") if utc else values
    text = pa.array(values.astype(object).where(values.notna(), None), type=pa.string(), from_pandas=True)
    if not pc.all(pc.match_substring_regex(text, r"^-?\d+$")).as_py():  # CSV text, or dates
        return values
    kind = pa.timestamp("ns", tz="UTC" if utc else None)
    return text.cast(pa.int64()).cast(kind).to_pandas(date_as_object=False)


def scorer(bundle_ref, present: dict[str, list[str]], as_of: pd.Timestamp, explore: float,
           contested: frozenset[str] = frozenset()):
    """The function applied to each group: validate, score with the broadcast bundle, add a fingerprint row."""
    def score_group(pdf: pd.DataFrame) -> pd.DataFrame:
        portfolio = validate(group_tables(pdf, present))
        rows = with_feature_text(bundle_ref.value.score(portfolio, as_of, explore=explore, keep_features=True,
                                                        contested=contested))
        rows = rows.assign(_kind="row", _fingerprint=None, _accounts=0)
        group = pd.DataFrame({c: [None] for c in (*BATCH_COLUMNS, *ALT_COLUMNS, "_features")}).assign(
            _kind="group", _fingerprint=portfolio.fingerprint(), _accounts=len(portfolio.accounts))
        out = pd.concat([rows, group], ignore_index=True)
        for col in NUMBER_COLUMNS:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
        out["_accounts"] = out["_accounts"].astype("int64")
        return plain_text(out.loc[:, [*BATCH_COLUMNS, *ALT_COLUMNS, *(c for c, _ in EXTRA)]])  # no pandas 3 str

    return score_group


def latest_event(spark, location: str) -> pd.Timestamp | None:
    """The latest payment or contact instant, computed by Spark on the tables as read (integers are parquet
    nanoseconds; text is ISO 8601); the default as-of is `models.as_of.default_as_of` of it."""
    from pyspark.sql import functions as F  # optional and slow to import: only when the Spark engine runs
    from pyspark.sql.types import LongType, StringType  # optional and slow to import: only when the Spark engine runs

    latest = []
    for name, column in (("payments", "paid_at"), ("contacts", "contacted_at")):
        values = read_table(spark, location, name)
        if column not in values.columns:
            continue
        kind = values.schema[column].dataType
        if isinstance(kind, LongType):
            top = values.agg(F.max(column)).first()[0]
            latest.append(None if top is None else pd.Timestamp(top, unit="ns", tz="UTC"))
        else:
            col = F.try_to_timestamp(F.col(column)) if isinstance(kind, StringType) else F.col(column)
            top = values.agg(F.max(col)).first()[0]
            latest.append(None if top is None else pd.Timestamp(top).tz_localize("UTC"))
    latest = [t for t in latest if t is not None]
    return max(latest) if latest else None


def score(location, bundle, as_of: str | None, explore: float, chunk_size: int, master: str,
          driver_memory: str = "4g", contested: frozenset[str] = frozenset()):
    """Score a portfolio on Spark; returns (`serving.batch.Scored`, as-of instant)."""
    location = str(location)
    if sources.is_database(location):
        raise ValueError("--engine spark reads parquet or csv files; score a database with --engine local")
    spark = session(master, driver_memory)
    try:
        accounts = read_table(spark, location, "accounts").count()
        buckets = max(-(-accounts // chunk_size), spark.sparkContext.defaultParallelism)  # every core busy
        spark.conf.set("spark.sql.shuffle.partitions", str(buckets))
        union, present = tagged_union(spark, location, buckets)
        when = resolve_as_of(as_of, lambda: latest_event(spark, location))
        ref = spark.sparkContext.broadcast(bundle)
        scored = union.groupBy("_bucket").applyInPandas(scorer(ref, present, when, explore, contested), output_schema())
        result = _collect(scored)
    finally:
        spark.stop()
    groups = result[result["_kind"] == "group"]
    rows = plain_text(result[result["_kind"] == "row"].drop(columns=["_kind", "_fingerprint", "_accounts"]))
    digest = hashlib.sha256("\n".join(sorted(groups["_fingerprint"])).encode()).hexdigest()
    return Scored(in_priority_order([rows], ("_features",)), digest, int(groups["_accounts"].sum()),
                  chunks=len(groups)), when


def _collect(scored) -> pd.DataFrame:
    """The scored rows on the driver; a contract error inside a group becomes a one-line error."""
    from pyspark.errors import PythonException  # optional and slow to import: only when the Spark engine runs

    try:
        return scored.toPandas()
    except PythonException as err:
        found = re.search(r"ContractError: (.+)", str(err))
        if found:
            raise ValueError(f"{found.group(1).strip()} (rows counted within one Spark group of accounts)") from None
        raise
