"""The container images, built for real with ``make images`` and run in hardened containers.

Every container runs as a pod with the chart's security context would: UID 10001, read-only
root filesystem, all capabilities dropped, no new privileges, no network. The first run on a
fresh machine builds everything (the worker image downloads torch's CUDA wheels); later runs
reuse podman's layer cache and uv's cache mount under ``$ZOPILOT_CACHE/images``.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from zopilot_dev import images
from zopilot_dev.config import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.images, pytest.mark.timeout(3600)]

HARDENED = (
    "--rm",
    "--network=none",
    "--read-only",
    "--user=10001",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)
PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----", re.S)


def make_images() -> None:
    proc = subprocess.run(
        ["make", "--no-print-directory", "images"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"make images failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"


def image_ids() -> dict[str, str]:
    return {
        name: images.podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()
        for name in images.IMAGES
    }


def containers() -> list[str]:
    return images.podman("ps", "--all", "--quiet").stdout.split()


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    """``make images`` once for this module; the image IDs it produced."""
    make_images()
    return image_ids()


@pytest.fixture(autouse=True)
def no_leftover_containers(built: dict[str, str]) -> Iterator[None]:
    assert containers() == [], "a container from an earlier run is still there"
    yield
    assert containers() == [], "a test left a container behind"


def run(image: str, *args: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return images.podman("run", *HARDENED, *extra, image, *args, check=False)


def test_warm_make_images_reuses_every_layer(built: dict[str, str]) -> None:
    make_images()
    assert image_ids() == built


def test_worker_image_passes_doctor(built: dict[str, str]) -> None:
    proc = run(images.WORKER, "doctor", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert [c for c in report["checks"] if c["status"] == "FAIL"] == []
    numpy = next(c for c in report["checks"] if c["check"] == "numpy")
    assert numpy["detail"].startswith("numpy 2.")


def test_worker_image_carries_torch_cuda_wheels(built: dict[str, str]) -> None:
    code = "import torch; print(torch.version.cuda or '')"
    proc = run(images.WORKER, "-c", code, extra=("--entrypoint=python3",))
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\d+\.\d+", proc.stdout.strip()), proc.stdout


def test_operator_image_answers_help(built: dict[str, str]) -> None:
    proc = run(images.OPERATOR, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: zopilot-operator")


def test_operator_image_carries_the_crd(built: dict[str, str]) -> None:
    proc = run(images.OPERATOR, "/app/crds/documentjob.yaml", extra=("--entrypoint=cat",))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (REPO_ROOT / "crds" / "documentjob.yaml").read_text()


def test_fakeworker_image_exits_with_the_scripted_code(
    built: dict[str, str], tmp_path: Path
) -> None:
    control, term = tmp_path / "control", tmp_path / "term"
    control.mkdir()
    term.mkdir(mode=0o777)
    term.chmod(0o777)  # UID 10001 writes its termination message here
    (control / "ns__job.json").write_text(json.dumps({"attempts": {"2": {"exit": 75}}}))
    env = ("ZOPILOT_JOB_NAMESPACE=ns", "ZOPILOT_JOB_NAME=job", "ZOPILOT_ATTEMPT=2")
    proc = run(
        images.FAKEWORKER,
        extra=(
            f"--volume={control}:/control:ro",
            f"--volume={term}:/term",
            "--env=ZOPILOT_WORKER_TERMINATION_LOG=/term/message",
            *(f"--env={e}" for e in env),
        ),
    )
    assert proc.returncode == 75, proc.stderr
    message = json.loads((term / "message").read_text())
    assert message["exitCode"] == 75
    assert message["message"] == "fake worker attempt 2 exit 75"


@pytest.mark.parametrize("image", images.IMAGES)
def test_image_runs_as_uid_10001_by_default(built: dict[str, str], image: str) -> None:
    user = images.podman("image", "inspect", "--format", "{{.Config.User}}", image)
    assert user.stdout.strip() == "10001"
    # Without --user: the image's own default, still able to run with a read-only root.
    proc = images.podman(
        "run", "--rm", "--network=none", "--read-only", "--entrypoint=id", image, "-u", check=False
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "10001"), proc.stderr


@pytest.mark.parametrize("image", images.IMAGES)
def test_build_ca_is_not_baked_into_the_image(built: dict[str, str], image: str) -> None:
    """The host's local CAs (a TLS-intercepting proxy's) reach the build only as a secret."""
    env = images.podman("image", "inspect", "--format", "{{json .Config.Env}}", image)
    names = {e.split("=", 1)[0] for e in json.loads(env.stdout)}
    assert names.isdisjoint({"SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "UV_SYSTEM_CERTS"})
    # The host's local CAs (Debian: /usr/local/share/ca-certificates, appended to the
    # bundle the build passes as the secret), e.g. a TLS-intercepting proxy's.
    local = Path("/usr/local/share/ca-certificates")
    local_cas = {pem for f in local.rglob("*.crt") for pem in PEM.findall(f.read_text())}
    if not local_cas:
        return  # no local CA on this host: nothing that could have been baked in
    # One base64 line from the middle of each local CA, searched in every
    # certificate file of the image (the venv's certifi bundle included).
    needles = [f"--regexp={pem.splitlines()[len(pem.splitlines()) // 2]}" for pem in local_cas]
    found = run(
        image,
        "-rlF",
        *needles,
        "--include=*.pem",
        "--include=*.crt",
        "--include=*.cer",
        "/etc",
        "/usr",
        "/app",
        "/root",
        "/opt",
        extra=("--entrypoint=grep", "--user=0"),
    )
    assert found.stdout == "", f"a local CA of the host is in {image}: {found.stdout}"
    assert found.returncode == 1, found.stderr  # 1: searched, no match; 2: an error


def test_save_exports_oci_archives(built: dict[str, str]) -> None:
    archives = images.save_oci()
    assert set(archives) == set(images.IMAGES)
    for name, path in archives.items():
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
            assert {"oci-layout", "index.json"} <= names, name
            member = tar.extractfile("index.json")
            assert member is not None, name
            index = json.load(member)
        refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        assert refs, name
