"""The dev pod runner's path mapping (pure): container mounts vs host paths."""

from __future__ import annotations

import sys
from pathlib import Path

from zopilot_dev.podrunner import PodRunner

MOUNTS = ["/tmp", "/var/run/zopilot/volumes/inbox", "/models", "/dev/termination-log"]


def test_container_paths_map_under_the_pod_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rw = PodRunner._rewrite
    assert (
        rw("/var/run/zopilot/volumes/inbox/docs", root, MOUNTS)
        == f"{root}/var/run/zopilot/volumes/inbox/docs"
    )
    assert rw("/var/run/zopilot/volumes", root, MOUNTS) == f"{root}/var/run/zopilot/volumes"
    assert rw("/dev/termination-log", root, MOUNTS) == f"{root}/dev/termination-log"
    assert rw("/tmp", root, MOUNTS) == f"{root}/tmp"
    assert rw("relative/path", root, MOUNTS) == "relative/path"
    assert rw("/etc/hostname", root, MOUNTS) == "/etc/hostname"


def test_existing_host_paths_under_a_mount_are_left_alone(tmp_path: Path) -> None:
    # e.g. a checkout under /tmp: its python must not be mapped into the pod's /tmp.
    host = tmp_path / "venv-python"
    host.write_text("")
    assert str(host).startswith("/tmp/")
    assert PodRunner._rewrite(str(host), tmp_path / "root", MOUNTS) == str(host)
    assert PodRunner._rewrite(sys.executable, tmp_path / "root", MOUNTS) == sys.executable
