"""Feature aggregation engines at portfolio scale: the numpy code of models/features.py against DuckDB and polars.

    python benchmarks/batch_features.py --data /tmp/bench/p1M

Per chunk of accounts (as the batch reads them), `models.features.prepare` builds the sorted, encoded arrays
once; then each engine computes the same 17 payment and contact features from those arrays at the as-of time:
counts in trailing windows, money paid in 90 days, recency of the last payment, contact and reach, the last
payment method, attempts and reaches per channel. numpy is the code the batch runs (`bincount` over sorted
account codes); DuckDB and polars run the same definitions as a grouped query over the same columns (handed
over as Arrow, zero copy). Every engine's result is checked against numpy's, value for value; one run each,
seconds added over the chunks. `prepare` (joins on account id, local time zones, sorting) is timed too: it is
shared by all engines and is most of the feature stage.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from models import features as F
from models import vocab
from models.config import load_params
from serving import sources
from serving.batch import batch_params

AS_OF = "2026-11-01T00:00:00+09:00"
DAY = F.DAY_NS
CHANNELS = vocab.CHANNELS[:-1]
REACHED = [vocab.OUTCOMES.index(o) for o in vocab.REACHED_OUTCOMES]
DIRECT_DEBIT = vocab.PAYMENT_METHODS.index("direct_debit")
NONE_CHANNEL = vocab.CHANNELS.index("none")


def names(days: int) -> list[str]:
    """The features compared, in order."""
    out = ["partial_payments_6m", "manual_payments_12m", "paid_90d_instalments", "days_since_last_payment",
           "last_payment_method"]
    for ch in CHANNELS:
        out += [f"{ch}_attempts_{days}d", f"{ch}_reached_{days}d"]
    return [*out, "days_since_last_contact", "days_since_last_reach"]


def with_numpy(prep: F.Prepared, t: int, config: F.FeatureConfig) -> pd.DataFrame:
    """What the batch runs: models.features' own functions."""
    cols = {**F._payment_features(prep, t, config), **F._contact_features(prep, t, config)}
    return pd.DataFrame({name: cols[name] for name in names(config.contact_lookback_days)})


def arrow_inputs(prep: F.Prepared) -> dict[str, pa.Table]:
    """The prepared arrays as Arrow tables (zero copy), with each row's position in the sorted order."""
    pay = pa.table({"acc": prep.pay_acc, "ts": prep.pay_at, "cents": prep.pay_units,
                    "method": prep.pay_method.astype(np.int64), "monthly": prep.monthly[prep.pay_acc],
                    "pos": np.arange(len(prep.pay_acc))})
    con = pa.table({"acc": prep.con_acc, "ts": prep.con_at, "channel": prep.con_channel.astype(np.int64),
                    "reached": np.isin(prep.con_outcome, REACHED), "outbound": prep.con_outbound})
    return {"pay": pay, "con": con, "acct": pa.table({"acc": np.arange(prep.n), "monthly": prep.monthly})}


def duckdb_sql(t: int, config: F.FeatureConfig) -> str:
    """The same definitions as one SQL query over the account range (float arithmetic as numpy does it)."""
    days = config.contact_lookback_days
    channel_cols = ",\n".join(
        f"count(*) FILTER (WHERE recent AND channel = {code}) AS {ch}_attempts_{days}d, "
        f"count(*) FILTER (WHERE recent AND channel = {code} AND reached) AS {ch}_reached_{days}d"
        for code, ch in enumerate(CHANNELS))
    return f"""
    WITH p AS (
      SELECT acc,
        count(*) FILTER (WHERE ts >= {t - 182 * DAY} AND cents < {config.partial_payment_ratio}
          * (monthly * {config.money_scale}))
          AS partial_payments_6m,
        count(*) FILTER (WHERE ts >= {t - 365 * DAY} AND method <> {DIRECT_DEBIT}) AS manual_payments_12m,
        coalesce(sum(cents::DOUBLE) FILTER (WHERE ts >= {t - 90 * DAY}), 0) AS paid_cents_90d,
        max(ts) AS last_at, arg_max(method, pos) AS last_method
      FROM pay WHERE ts < {t} GROUP BY acc),
    c0 AS (SELECT *, ts >= {t - days * DAY} AS recent FROM con
           WHERE ts < {t} AND outbound AND channel <> {NONE_CHANNEL}),
    c AS (SELECT acc, {channel_cols}, max(ts) AS last_contact, max(ts) FILTER (WHERE reached) AS last_reach
          FROM c0 GROUP BY acc)
    SELECT coalesce(p.partial_payments_6m, 0)::DOUBLE AS partial_payments_6m,
      coalesce(p.manual_payments_12m, 0)::DOUBLE AS manual_payments_12m,
      coalesce(p.paid_cents_90d, 0) / {config.money_scale} / a.monthly AS paid_90d_instalments,
      ({t}::DOUBLE - p.last_at::DOUBLE) / {DAY}.0 AS days_since_last_payment,
      p.last_method::DOUBLE AS last_payment_method,
      {", ".join(f"coalesce(c.{ch}_{k}_{days}d, 0)::DOUBLE AS {ch}_{k}_{days}d"
                 for ch in CHANNELS for k in ("attempts", "reached"))},
      ({t}::DOUBLE - c.last_contact::DOUBLE) / {DAY}.0 AS days_since_last_contact,
      ({t}::DOUBLE - c.last_reach::DOUBLE) / {DAY}.0 AS days_since_last_reach
    FROM acct a LEFT JOIN p USING (acc) LEFT JOIN c USING (acc) ORDER BY a.acc"""


def with_duckdb(inputs: dict[str, pa.Table], t: int, config: F.FeatureConfig, conn) -> pd.DataFrame:
    for name, table in inputs.items():
        conn.register(name, table)
    frame = conn.execute(duckdb_sql(t, config)).df()
    return frame.astype(np.float64)


def with_polars(inputs: dict[str, pa.Table], t: int, config: F.FeatureConfig) -> pd.DataFrame:
    """The same definitions as polars expressions."""
    days = config.contact_lookback_days
    pay = pl.from_arrow(inputs["pay"]).filter(pl.col("ts") < t)
    p = pay.group_by("acc").agg(
        ((pl.col("ts") >= t - 182 * DAY) & (pl.col("cents") < config.partial_payment_ratio
                                          * (pl.col("monthly") * config.money_scale)))
        .sum().alias("partial_payments_6m"),
        ((pl.col("ts") >= t - 365 * DAY) & (pl.col("method") != DIRECT_DEBIT)).sum().alias("manual_payments_12m"),
        pl.col("cents").cast(pl.Float64).filter(pl.col("ts") >= t - 90 * DAY).sum().alias("paid_cents_90d"),
        pl.col("ts").max().alias("last_at"), pl.col("method").sort_by("pos").last().alias("last_method"))
    outbound = (pl.col("ts") < t) & pl.col("outbound") & (pl.col("channel") != NONE_CHANNEL)
    con = pl.from_arrow(inputs["con"]).filter(outbound)
    recent = pl.col("ts") >= t - days * DAY
    c = con.group_by("acc").agg(
        *[(recent & (pl.col("channel") == code)).sum().alias(f"{ch}_attempts_{days}d")
          for code, ch in enumerate(CHANNELS)],
        *[(recent & (pl.col("channel") == code) & pl.col("reached")).sum().alias(f"{ch}_reached_{days}d")
          for code, ch in enumerate(CHANNELS)],
        pl.col("ts").max().alias("last_contact"), pl.col("ts").filter(pl.col("reached")).max().alias("last_reach"))
    out = pl.from_arrow(inputs["acct"]).join(p, on="acc", how="left").join(c, on="acc", how="left").sort("acc")
    since = lambda col: (pl.lit(float(t)) - pl.col(col).cast(pl.Float64)) / float(DAY)  # noqa: E731
    counts = [c for c in names(days) if c.endswith(f"_{days}d") or c in ("partial_payments_6m", "manual_payments_12m")]
    out = out.select(
        *[pl.col(c).fill_null(0).cast(pl.Float64) for c in counts],
        (pl.col("paid_cents_90d").fill_null(0.0) / config.money_scale / pl.col("monthly"))
        .alias("paid_90d_instalments"),
        since("last_at").alias("days_since_last_payment"),
        pl.col("last_method").cast(pl.Float64).alias("last_payment_method"),
        since("last_contact").alias("days_since_last_contact"), since("last_reach").alias("days_since_last_reach"))
    return out.to_pandas()[names(days)].astype(np.float64)


def compare(reference: pd.DataFrame, other: pd.DataFrame) -> float:
    """The largest absolute difference (NaN where exactly one side is NaN counts as infinite)."""
    a, b = reference.to_numpy(), other[reference.columns].to_numpy()
    if (np.isnan(a) != np.isnan(b)).any():
        return float("inf")
    both = ~np.isnan(a)
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--chunk-size", type=int, default=None, help="default params.yaml batch.chunk_size")
    args = parser.parse_args()
    args.chunk_size = args.chunk_size or int(batch_params()["chunk_size"])
    config = F.FeatureConfig.from_params(load_params())
    t = int(pd.Timestamp(AS_OF).tz_convert("UTC").value)
    seconds, worst, conn = defaultdict(float), defaultdict(float), duckdb.connect()
    tables = sources.read_tables(args.data)
    for chunk in sources.chunks(tables, args.chunk_size):
        began = time.perf_counter()
        prep = chunk.prepare(config)  # as the batch prepares it (from Arrow when the contract accepts it as read)
        seconds["prepare (shared)"] += time.perf_counter() - began
        began = time.perf_counter()
        reference = with_numpy(prep, t, config)
        seconds["numpy (models/features.py)"] += time.perf_counter() - began
        inputs = arrow_inputs(prep)
        for label in ("duckdb", "polars"):
            began = time.perf_counter()
            result = with_duckdb(inputs, t, config, conn) if label == "duckdb" else with_polars(inputs, t, config)
            seconds[label] += time.perf_counter() - began
            worst[label] = max(worst[label], compare(reference, result))
    print(f"{tables['accounts'].num_rows:,} accounts, {len(names(config.contact_lookback_days))} features, "
          f"chunks of {args.chunk_size:,}; one run each")
    for label, value in seconds.items():
        check = "" if label not in worst else f"   max |difference| from numpy: {worst[label]:.3g}"
        print(f"  {label:30s} {value:7.2f} s{check}")


if __name__ == "__main__":
    main()
