"""The dependency audit's gate (scripts/audit.py): a clean report only counts when the service is live.

pip-audit itself needs a vulnerability service; these tests give the gate pip-audit's JSON reports (the
format pip-audit 2.x writes) and check what it concludes. `make test` runs the real audit before the suite.
"""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("audit", ROOT / "scripts" / "audit.py")
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)

CANARY_FOUND = {"dependencies": [{"name": "requests", "version": "2.19.0", "vulns": [
    {"id": "PYSEC-2018-28", "fix_versions": ["2.20.0"], "aliases": ["CVE-2018-18074"], "description": "..."}]}],
    "fixes": []}
NOT_FOUND = {"dependencies": [{"name": "requests", "skip_reason": "Dependency not found on PyPI and could not be "
                                                                  "audited: requests (2.19.0)"}], "fixes": []}
CLEAN = {"dependencies": [{"name": "numpy", "version": "2.3.4", "vulns": []},
                          {"name": "private-pkg", "skip_reason": "Dependency not found on PyPI"}], "fixes": []}
DIRTY = {"dependencies": [{"name": "numpy", "version": "2.3.4", "vulns": []},
                          {"name": "jinja2", "version": "3.1.2", "vulns": [{
                              "id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": ["CVE-2024-22195"]}]}],
         "fixes": []}


def _service(canary: dict, pins: dict | None, live: str = "pypi"):
    def fake(requirements: Path, service: str):
        if requirements.name == "canary.txt":
            return canary if service == live else NOT_FOUND
        return pins
    return fake


def test_an_unreachable_service_is_reported_as_not_audited_never_as_clean(monkeypatch, capsys):
    monkeypatch.setattr(audit, "pip_audit", _service(NOT_FOUND, CLEAN))
    monkeypatch.delenv("CUREFLOW_AUDIT_REQUIRED", raising=False)
    assert audit.main() == 0
    out = capsys.readouterr().out
    assert out.startswith("NOT AUDITED") and "0 with known" not in out
    monkeypatch.setenv("CUREFLOW_AUDIT_REQUIRED", "1")
    assert audit.main() == 2


def test_a_known_vulnerability_fails_the_audit_and_names_package_advisory_and_fix(monkeypatch, capsys):
    monkeypatch.setattr(audit, "pip_audit", _service(CANARY_FOUND, DIRTY, live="osv"))
    assert audit.main() == 1
    out = capsys.readouterr().out
    assert "VULNERABLE jinja2==3.1.2: GHSA-h5c8-rqwp-cp95 (CVE-2024-22195) fixed in 3.1.3" in out
    assert "pip-audit (osv): 2 of 2 pins audited, 1 with known vulnerabilities" in out


def test_a_clean_audit_passes_and_lists_what_it_could_not_audit(monkeypatch, capsys):
    monkeypatch.setattr(audit, "pip_audit", _service(CANARY_FOUND, CLEAN))
    assert audit.main() == 0
    out = capsys.readouterr().out
    assert "not audited: private-pkg" in out and "1 of 2 pins audited, 0 with known" in out


def test_a_broken_pip_audit_run_fails(monkeypatch):
    monkeypatch.setattr(audit, "pip_audit", _service(CANARY_FOUND, None))
    assert audit.main() == 1

