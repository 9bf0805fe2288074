"""dev/apt-install.sh: `make test` installs packages from two scripts at once
(dev/install-deps.sh beside dev/images.sh); the second apt run must wait for the
first, not fail on apt's lists lock (which it did on a fresh machine)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from zopilot_dev.config import REPO_ROOT

# A stand-in apt-get that fails like the real one when another apt run holds its
# lock, and records every call.
FAKE_APT = """#!/usr/bin/env bash
set -u
log="$FAKE_APT_DIR/calls"
if ! mkdir "$FAKE_APT_DIR/held" 2>/dev/null; then
  echo "E: Could not get lock /var/lib/apt/lists/lock" >&2
  exit 100
fi
echo "$*" >>"$log"
# Long enough that an unserialised second caller arrives while this one runs.
python3 -c 'import time; time.sleep(0.3)'
rmdir "$FAKE_APT_DIR/held"
"""


def test_concurrent_installs_take_turns(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text(FAKE_APT)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_APT_DIR": str(tmp_path)}
    script = REPO_ROOT / "dev" / "apt-install.sh"
    runs = [
        subprocess.Popen(
            ["bash", str(script), pkg, "shared"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pkg in ("podman", "prometheus")
    ]
    results = [(*run.communicate(), run.returncode) for run in runs]
    assert all(rc == 0 for _, _, rc in results), results
    calls = (tmp_path / "calls").read_text().splitlines()
    # Each caller: one update, one install of its own packages (sorted, unique).
    assert sorted(c.split()[0] for c in calls) == ["install"] * 2 + ["update"] * 2
    installs = sorted(c for c in calls if c.startswith("install"))
    assert installs[0].endswith("podman shared") and installs[1].endswith("prometheus shared")
    assert not (tmp_path / "held").exists()


def test_nothing_else_calls_apt_get() -> None:
    """Every Debian install goes through the one serialised path."""
    callers = [
        p.relative_to(REPO_ROOT)
        for p in (REPO_ROOT / "dev").rglob("*.sh")
        if re.search(r"^\s*[^#\n]*\bapt-get\b", p.read_text(), re.M)
    ]
    assert callers == [Path("dev/apt-install.sh")]
