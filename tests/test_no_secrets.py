"""No secret in the repository (toward issue 8): every tracked file is scanned for private keys, cloud and
token formats, and database URLs or settings that carry a password. Test keys are named as such."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP )?PRIVATE KEY"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "URL with a password": re.compile(r"[a-z+]+://[^\s:/@'\"]+:[^\s@/'\"{}$*]+@[^\s'\"]+"),  # *** is masked
    "key or password assigned": re.compile(
        r"(?i)\b(?:password|passwd|secret|api_key|apikey|token)\s*[:=]\s*['\"][^'\"\s]{12,}['\"]"),
}
ALLOWED = re.compile(r"(?i)test|example|dummy|placeholder")  # fixtures that say what they are
MARKER = "# fixture, not a secret"  # a test that must hold a secret-shaped value says so on its line


def _tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in names.splitlines() if (ROOT / name).is_file()]


def test_no_tracked_file_holds_a_secret():
    files = _tracked()
    assert len(files) > 50  # the scan really reads the repository
    found = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for line_no, line in enumerate(text.splitlines(), 1):
            for name, pattern in PATTERNS.items():
                match = pattern.search(line)
                if match and not ALLOWED.search(match.group(0)) and MARKER not in line:
                    found.append(f"{path.relative_to(ROOT)}:{line_no}: {name}")
    assert not found, "\n".join(found)


def test_the_scan_catches_what_it_looks_for():
    samples = {  # split literals, so that this file itself holds no secret-shaped text
        "private key": "-----BEGIN RSA " "PRIVATE KEY-----",
        "AWS access key": "aws = AKIA" "IOSFODNN7ABCDEFG",
        "URL with a password": "CUREFLOW_DATABASE_URL=postgresql://cureflow:" "s3cr3tPassw0rd@db.internal/cureflow",
        "key or password assigned": 'api_key = "9f8e7d6c' '5b4a39281706f5e4"',
    }
    for name, line in samples.items():
        assert PATTERNS[name].search(line), name
