"""Audit every pinned dependency (constraints.txt) for known vulnerabilities with pip-audit.

    .venv/bin/python scripts/audit.py            # `make audit`; `make test` runs it first

pip-audit asks a vulnerability service about each pinned release: PyPI's per-release JSON, or OSV. Where
neither answers, pip-audit reports every package as "could not be audited" and exits 0, which reads like a
clean audit. So a canary goes first: a release with published advisories (requests 2.19.0, CVE-2018-18074).
- The canary's advisories come back: the service answers, every pin is audited, and any known
  vulnerability fails the run (exit 1) with the package, the advisory and the fixed versions.
- No service returns them: nothing can be audited from this machine. The run says so in one line that
  starts with "NOT AUDITED" and exits 0, so an offline build still runs its tests; set
  CUREFLOW_AUDIT_REQUIRED=1 to make that a failure (exit 2) where the network is expected.
A pin the service does not know (a private package) is listed as not audited; it does not fail the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANARY = "requests==2.19.0"  # PYSEC-2018-28 / CVE-2018-18074: any working service knows it
SERVICES = ("pypi", "osv")


def pip_audit(requirements: Path, service: str) -> dict | None:
    """pip-audit's JSON report for pinned requirements (no resolution, no pip), or None when it failed."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--requirement", str(requirements), "--no-deps", "--disable-pip",
         "--vulnerability-service", service, "--format", "json", "--progress-spinner", "off"],
        capture_output=True, text=True, timeout=600)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None


def live_service() -> str | None:
    """The first service that reports the canary's advisories."""
    with tempfile.TemporaryDirectory() as tmp:
        canary = Path(tmp) / "canary.txt"
        canary.write_text(CANARY + "\n")
        for service in SERVICES:
            report = pip_audit(canary, service)
            if report and any(dep.get("vulns") for dep in report["dependencies"]):
                return service
    return None


def main() -> int:
    service = live_service()
    if service is None:
        print(f"NOT AUDITED: no vulnerability service ({', '.join(SERVICES)}) answered from this machine; "
              f"the canary {CANARY} came back without its advisories")
        return 2 if os.environ.get("CUREFLOW_AUDIT_REQUIRED") == "1" else 0
    report = pip_audit(ROOT / "constraints.txt", service)
    if report is None:
        print(f"pip-audit failed on constraints.txt with the {service} service")
        return 1
    deps = report["dependencies"]
    found = [dep for dep in deps if dep.get("vulns")]
    skipped = [dep for dep in deps if "skip_reason" in dep]
    for dep in found:
        for vuln in dep["vulns"]:
            print(f"VULNERABLE {dep['name']}=={dep['version']}: {vuln['id']} "
                  f"({', '.join(vuln.get('aliases', []))}) fixed in {', '.join(vuln['fix_versions']) or 'nothing yet'}")
    for dep in skipped:
        print(f"not audited: {dep['name']}: {dep['skip_reason']}")
    print(f"pip-audit ({service}): {len(deps) - len(skipped)} of {len(deps)} pins audited, "
          f"{len(found)} with known vulnerabilities")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
