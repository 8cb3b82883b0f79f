"""Several worker processes sharing one loaded model: `cureflow serve --workers N` (N > 1).

Gunicorn's master builds the app and loads the model (`serving.api.app.preloaded_app`), then forks the
workers (`preload_app`): each worker inherits the model, the libraries and the frozen heap
(`holder.settle_heap`) copy-on-write instead of loading its own, and runs the app with uvicorn
(`uvicorn_worker.UvicornWorker`: lifespan, the alias watcher and the decision log's connections start in
each worker, after the fork). The master watches the workers and starts a new one when one dies; SIGTERM
stops them gracefully. Nothing before the fork predicts on more than one thread or opens a database
connection: the smoke test of the load scores one account on one thread, and the decision log connects
on first use.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

from serving.api.app import preloaded_app
from serving.observability import uvicorn_log_config

GRACEFUL_S = 30  # what a worker has to finish the requests in flight when told to stop


class Worker(UvicornWorker):
    """uvicorn in a forked worker, logging as `cureflow serve` does (JSON lines, no access log)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto", "log_config": uvicorn_log_config(),
                                     "access_log": False}


class PreforkServer(BaseApplication):
    """Gunicorn, configured in code: bind, workers, the uvicorn worker, the app built before the fork."""

    def __init__(self, host: str, port: int, workers: int):
        self.options = {"bind": f"{host}:{port}", "workers": workers, "worker_class": f"{__name__}.Worker",
                        "preload_app": True, "graceful_timeout": GRACEFUL_S, "loglevel": "warning",
                        "accesslog": None, "proc_name": "cureflow"}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return preloaded_app()
