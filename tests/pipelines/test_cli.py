"""The command line's one error boundary: bad input is one line and exit code 2; a bug keeps its traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipelines.cli import app


@pytest.mark.parametrize(("text", "says"), [
    ("policy: [1, 2\n", "is not valid YAML at line 2, column 1"),
    ("- just\n- a list\n", "must hold a mapping of sections"),
    (None, "not found"),
])
def test_a_bad_params_file_is_one_line_naming_the_file(tmp_path, monkeypatch, text, says):
    params = tmp_path / "params.yaml"
    if text is not None:
        params.write_text(text)
    monkeypatch.setenv("CUREFLOW_PARAMS", str(params))
    done = CliRunner().invoke(app, ["simulate", "--accounts", "5", "--months", "2", "--out", str(tmp_path / "p")])
    assert done.exit_code == 2
    assert f"error: params file {params} (from CUREFLOW_PARAMS) {says}" in done.output
    assert "Traceback" not in done.output and not (tmp_path / "p").exists()


def test_a_bug_is_not_dressed_up_as_bad_input(tmp_path, monkeypatch):
    import pipelines.simulate

    def broken(**_):
        raise KeyError("a programming error")

    monkeypatch.setattr(pipelines.simulate, "main", broken)
    done = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "p")])
    assert done.exit_code == 1 and isinstance(done.exception, KeyError)


@pytest.mark.parametrize("args", [["simulate", "--accounts", "0"], ["simulate", "--months", "0"],
                                  ["serve", "--workers", "0"]])
def test_counts_below_one_are_refused_by_the_option_itself(args):
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and "Invalid value for" in done.output
