"""The project's container images, as the local cluster and tests use them.

``dev/images.sh`` does the work (podman confined to ``$ZOPILOT_CACHE/images``, a
Debian-built Python base where no registry is reachable, the proxy CA as a build
secret); this module names the images and drives the script from Python, e.g. to
export OCI archives that a node's containerd imports.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from zopilot_dev.config import REPO_ROOT, default_images_dir

SCRIPT = REPO_ROOT / "dev" / "images.sh"
WORKER = "localhost/zopilot/worker:dev"
OPERATOR = "localhost/zopilot/operator:dev"
FAKEWORKER = "localhost/zopilot/fakeworker:dev"
IMAGES = (WORKER, OPERATOR, FAKEWORKER)


def archive_path(image: str) -> Path:
    """Where ``dev/images.sh save`` writes ``image``'s OCI archive (``oci/<name>.oci.tar``)."""
    short = image.rsplit("/", 1)[-1].split(":", 1)[0]
    return default_images_dir() / "oci" / f"{short}.oci.tar"


class ImageBuildError(RuntimeError):
    """``dev/images.sh`` failed; the message carries the tail of its output."""


def _script(*args: str) -> str:
    proc = subprocess.run(
        [str(SCRIPT), *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise ImageBuildError(f"dev/images.sh {' '.join(args)} exited {proc.returncode}:\n{tail}")
    return proc.stdout


def build(names: Sequence[str] = ()) -> None:
    """Build the images (all by default; names: worker, operator, fakeworker); idempotent."""
    _script("build", *names)


def save_oci() -> dict[str, Path]:
    """Build what is missing, export every image as an OCI archive; image name -> archive.

    Archives live under the images state dir and are rewritten only when the image changed.
    """
    out: dict[str, Path] = {}
    for line in _script("save").splitlines():
        name, _, path = line.partition(" ")
        if path:
            out[name] = Path(path)
    return out


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman against the images' own storage (``dev/images.sh podman ARGS``)."""
    return subprocess.run(
        [str(SCRIPT), "podman", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=check
    )
