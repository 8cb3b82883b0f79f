"""The nightly batch: score a whole portfolio in chunks of accounts with the same bundle the API uses.

`cureflow score` runs `score_source` (`run`):

1. read the four tables from a directory or a database (`serving.sources`) as Arrow tables;
2. score chunks of `batch.chunk_size` accounts (each validated on its own) with `ScoringBundle.score`, keeping
   each finished chunk as a parquet part in `<out>.parts/`, named by the chunk's fingerprint; the local engine
   (`local`, parts in `files`) does this, `--engine spark` scores groups of accounts on Spark instead (`spark`);
3. keep the day's calls within capacity over all rows (a global step, after the chunks: `models.queue`);
4. record one decision per account in the decision log, keyed by the run and the account, so that a run
   started again records nothing twice (`records`);
5. write the work queue to a temporary file and rename it into place, then the summary JSON and the HTML
   report beside it (`morning_report`), and remove the parts; print the last lines (`console`).

A run killed at any point (kill -9 included) and started again with the same input, model and options reads
the input again, takes every chunk whose part exists with the same fingerprint instead of scoring it, and
writes a work queue identical to an uninterrupted run's. The run id is a digest of the input's chunk
fingerprints, the as-of time, the model, the exploration rate and the call capacity.

Modules import one another in one direction: run -> (spark, local) -> files -> rows; records, console and
morning_report import no other module of the batch. This package re-exports what the command line, the tests
and the benchmarks use.
"""

from serving.batch.console import print_queue
from serving.batch.files import Parts, output_format, write_atomic
from serving.batch.local import account_chunks, score_chunks, score_portfolio
from serving.batch.records import decision_records, default_decision_log, open_contests, record_decisions
from serving.batch.rows import Scored, plain_text, with_feature_text
from serving.batch.run import BatchOptions, batch_params, run_id, score_dir, score_source

__all__ = ["BatchOptions", "Parts", "Scored", "account_chunks", "batch_params", "decision_records",
           "default_decision_log", "open_contests", "output_format", "plain_text", "print_queue", "record_decisions",
           "run_id", "score_chunks", "score_dir", "score_portfolio", "score_source", "with_feature_text",
           "write_atomic"]
