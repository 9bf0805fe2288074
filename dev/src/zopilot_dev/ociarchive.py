"""Single-layer OCI image archives from local files (pure; no registry, no podman).

The real nodes need a sandbox ("pause") image and the tests a small image of
their own; both are one static binary (built by ``dev/tools.sh`` from
``dev/pause`` and ``dev/testbox``). ``oci_archive`` writes an OCI image layout
as a tar that ``ctr images import`` accepts, with the image name in the
``io.containerd.image.name`` annotation. The output is byte-deterministic
(fixed mtimes and owners), so its digest changes only with the binary.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PAUSE_IMAGE = "localhost/zopilot/pause:dev"
TESTBOX_IMAGE = "localhost/zopilot/testbox:dev"

_LAYER = "application/vnd.oci.image.layer.v1.tar"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class ImageFile:
    """A file of the image: its path in the image, its bytes and mode."""

    path: str
    data: bytes
    mode: int = 0o755


def _tar(members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, *, size: int = 0, mode: int = 0o644, dir_: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.type = tarfile.DIRTYPE if dir_ else tarfile.REGTYPE
    return info


def layer(files: Sequence[ImageFile]) -> bytes:
    """An uncompressed layer tar with the files and their parent directories."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    dirs: set[str] = set()
    for f in sorted(files, key=lambda f: f.path):
        rel = f.path.strip("/")
        if not rel or ".." in rel.split("/"):
            raise ValueError(f"bad image path {f.path!r}: give an absolute path without '..'")
        parts = rel.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                members.append((_info(d, mode=0o755, dir_=True), None))
        members.append((_info(rel, size=len(f.data), mode=f.mode), f.data))
    return _tar(members)


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def oci_archive(
    name: str,
    files: Sequence[ImageFile],
    *,
    entrypoint: Sequence[str],
    user: str = "",
    env: Mapping[str, str] | None = None,
) -> bytes:
    """An OCI image-layout tar holding one linux/amd64 image called ``name``."""
    if ":" not in name.rsplit("/", 1)[-1]:
        raise ValueError(f"image name {name!r} needs a tag, e.g. {name}:dev")
    layer_digest, layer_bytes = _blob(layer(files))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": list(entrypoint),
            "Env": [f"{k}={v}" for k, v in sorted((env or {}).items())],
            **({"User": user} if user else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "zopilot_dev.ociarchive"}],
    }
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST,
        "config": {"mediaType": _CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": _LAYER, "digest": layer_digest, "size": len(layer_bytes)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": _MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                },
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("blobs", mode=0o755, dir_=True), None),
        (_info("blobs/sha256", mode=0o755, dir_=True), None),
    ]
    for digest, data in (
        (layer_digest, layer_bytes),
        (config_digest, config_bytes),
        (manifest_digest, manifest_bytes),
    ):
        members.append((_info(f"blobs/sha256/{digest[7:]}", size=len(data)), data))
    for fname, obj in (("oci-layout", {"imageLayoutVersion": "1.0.0"}), ("index.json", index)):
        data = json.dumps(obj, sort_keys=True).encode()
        members.append((_info(fname, size=len(data)), data))
    return _tar(members)


def binary_image(name: str, binary: Path, *, user: str = "") -> bytes:
    """An image whose only file is ``binary`` at ``/<its name>``, run as its entrypoint."""
    path = "/" + binary.name
    return oci_archive(name, [ImageFile(path, binary.read_bytes())], entrypoint=[path], user=user)
