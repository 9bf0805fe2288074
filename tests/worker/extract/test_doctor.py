"""The doctor: one real run (as the CLI module), plus its formatting and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from zopilot_worker import doctor
from zopilot_worker.doctor import CheckResult

EXPECTED_CHECKS = [
    "numpy",
    "scipy",
    "scipy.special",
    "pandas",
    "opencv",
    "scikit-image",
    "pillow",
    "torch",
    "safetensors+tokenizers",
    "bitsandbytes",
    "pypdfium2+lxml",
    "docstrange",
    "cuda",
]


@pytest.fixture(scope="module")
def real_run() -> dict[str, object]:
    """``python -m zopilot_worker.doctor --json`` in a fresh interpreter (what CI/the image run)."""
    proc = subprocess.run(
        [sys.executable, "-m", "zopilot_worker.doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    return report


@pytest.mark.slow
def test_doctor_passes_here(real_run: dict[str, object]) -> None:
    checks = real_run["checks"]
    assert isinstance(checks, list)
    assert real_run["ok"] is True
    assert [c["check"] for c in checks] == EXPECTED_CHECKS
    by_name = {c["check"]: c for c in checks}
    assert by_name["numpy"]["detail"].startswith("numpy 2.")
    assert by_name["scipy.special"]["status"] == "OK"
    assert by_name["docstrange"]["status"] == "OK"
    assert all(c["status"] in ("OK", "NOTE") for c in checks)


@pytest.mark.slow
def test_table_lists_every_check(real_run: dict[str, object]) -> None:
    checks = real_run["checks"]
    assert isinstance(checks, list)
    table = doctor.format_table([CheckResult(**c) for c in checks])
    lines = table.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "SECONDS", "DETAIL"]
    assert [line.split()[0] for line in lines[1:-1]] == EXPECTED_CHECKS
    status_column = lines[0].index("STATUS")
    assert all(line[status_column:].split()[0] in ("OK", "NOTE") for line in lines[1:-1])
    assert lines[-1].startswith(f"{len(EXPECTED_CHECKS)} checks, 0 failed")


def test_exit_code_and_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = [
        CheckResult("numpy", "OK", "numpy 2.4", 0.1),
        CheckResult("scipy.special", "FAIL", "AssertionError: sph_legendre_p", 0.0),
    ]
    monkeypatch.setattr(doctor, "run_checks", lambda require_cuda=False: failing)
    assert doctor.main(["--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["checks"][1]["status"] == "FAIL"
    assert doctor.main([]) == 1
    assert "scipy.special  FAIL" in capsys.readouterr().out


def test_abi_symptom_is_a_failure() -> None:
    def imports_numpy1_module() -> str:
        print(
            "A module that was compiled using NumPy 1.x cannot be run in NumPy 2.4.6",
            file=sys.stderr,
        )
        return "imported"

    result = doctor._run("fake", imports_numpy1_module)
    assert result.status == "FAIL" and "built against NumPy 1.x" in result.detail


def test_require_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        doctor, "CHECKS", (("cuda", lambda: (_ for _ in ()).throw(doctor.Note("no CUDA"))),)
    )
    assert [r.status for r in doctor.run_checks()] == ["NOTE"]
    assert [r.status for r in doctor.run_checks(require_cuda=True)] == ["FAIL"]
