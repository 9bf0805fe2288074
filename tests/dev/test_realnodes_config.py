"""Real-node configuration and local images (pure): everything under the node's
directory, nothing host-wide, and image archives ctr can import."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from zopilot_dev import config, ociarchive, realnodes

NODE = realnodes.RealNode("real-gpu-0", 0, True)
NET = realnodes.NodeNetwork("0123abcd", 7)


def test_containerd_keeps_every_path_under_the_node_dir(tmp_path: Path) -> None:
    d = tmp_path / "nodes" / NODE.name
    text = realnodes.containerd_config(d, NET.ns_ip, ociarchive.PAUSE_IMAGE)
    paths = re.findall(r'= "(/[^"]*)"', text)
    allowed = (str(d), str(realnodes.CNI_BIN_DIR), "/usr/sbin/runc", "/usr/bin/runc")
    assert paths and all(p.startswith(allowed) for p in paths), paths
    for key in ("root", "state", "address", "Root", "conf_dir", "path"):
        assert re.search(rf'^\s*{key} = "{re.escape(str(d))}', text, re.M), key
    assert "netns_mounts_under_state_dir = true" in text
    assert "restrict_oom_score_adj = true" in text
    assert f'sandbox_image = "{ociarchive.PAUSE_IMAGE}"' in text


def test_kubelet_config_keeps_state_local_and_checks_kernel_defaults(tmp_path: Path) -> None:
    d = tmp_path / NODE.name
    cfg = realnodes.kubelet_config(
        NODE, d, address=NET.host_ip, port=1, healthz_port=2, ca_file="/ca", cgroup_root="/zx"
    )
    assert cfg["protectKernelDefaults"] is True  # checked against files, never written
    assert cfg["makeIPTablesUtilChains"] is False
    assert cfg["containerRuntimeEndpoint"] == f"unix://{d}/containerd.sock"
    assert cfg["podLogsDir"].startswith(str(d))
    assert cfg["volumePluginDir"].startswith(realnodes.KUBELET_ROOT)
    assert cfg["cgroupRoot"] == "/zx" and cfg["readOnlyPort"] == 0
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert realnodes.REAL_NODE_TAINT in cfg["registerWithTaints"]


def test_each_node_gets_its_own_bridge_and_subnet(tmp_path: Path) -> None:
    nodes = realnodes.real_nodes(1, 2)
    assert [n.name for n in nodes] == ["real-gpu-0", "real-cpu-0", "real-cpu-1"]
    lists = [realnodes.cni_conflist(n, NET, tmp_path / n.name) for n in nodes]
    bridges = [c["plugins"][0]["bridge"] for c in lists]
    subnets = [c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] for c in lists]
    assert len(set(bridges)) == 3 and len(set(subnets)) == 3
    assert subnets[0] == "100.96.7.0/24" and NET.host_ip == "100.64.7.1"
    for c, n in zip(lists, nodes, strict=True):
        bridge = c["plugins"][0]
        assert bridge["ipMasq"] is False  # no NAT rules on anyone's host
        assert bridge["ipam"]["dataDir"].startswith(str(tmp_path / n.name))
    assert len(NET.host_veth) <= 15 and len(NET.ns_veth) <= 15  # IFNAMSIZ


def test_bind_script_privatises_before_binding_and_quotes() -> None:
    script = realnodes.private_bind_script(
        [("/s/it's", "/proc/sys/kernel/panic")], ["kubelet", "--a=b c"]
    )
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert lines[1].startswith("mount --make-private") and "panic" in lines[1]
    assert lines[2] == "mount --rbind '/s/it'\\''s' '/proc/sys/kernel/panic'"
    assert lines[-1] == "exec 'kubelet' '--a=b c'"


def test_cluster_id_is_stable_and_distinguishes_state_dirs(tmp_path: Path) -> None:
    a, b = realnodes.cluster_id(tmp_path / "a"), realnodes.cluster_id(tmp_path / "b")
    assert a == realnodes.cluster_id(tmp_path / "a") and a != b
    assert re.fullmatch(r"[0-9a-f]{8}", a)


@pytest.mark.parametrize(("raw", "n"), [("0", 0), ("2", 2)])
def test_real_node_count_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, n: int
) -> None:
    monkeypatch.setenv("ZOPILOT_REAL_NODES", raw)
    cfg = config.ClusterConfig()
    assert cfg.real_gpu_nodes == n and cfg.real_cpu_nodes == n


@pytest.mark.parametrize("raw", ["yes", "-1", ""])
def test_a_bad_real_node_count_says_what_to_give(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("ZOPILOT_REAL_NODES", raw)
    with pytest.raises(ValueError, match="ZOPILOT_REAL_NODES"):
        config.ClusterConfig()


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_an_oci_archive_is_a_valid_deterministic_layout() -> None:
    files = [ociarchive.ImageFile("/bin/tool", b"\x7fELF...")]
    a = ociarchive.oci_archive(
        "localhost/x/tool:dev", files, entrypoint=["/bin/tool"], user="10001"
    )
    assert a == ociarchive.oci_archive(
        "localhost/x/tool:dev", files, entrypoint=["/bin/tool"], user="10001"
    )
    m = _members(a)
    assert json.loads(m["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(m["index.json"])
    desc = index["manifests"][0]
    assert desc["annotations"]["io.containerd.image.name"] == "localhost/x/tool:dev"
    # Every blob is stored under its own digest, with the declared size.
    for name, data in m.items():
        if name.startswith("blobs/sha256/"):
            assert name.rsplit("/", 1)[1] == hashlib.sha256(data).hexdigest()
    manifest = json.loads(m["blobs/sha256/" + desc["digest"][7:]])
    assert desc["size"] == len(m["blobs/sha256/" + desc["digest"][7:]])
    cfg = json.loads(m["blobs/sha256/" + manifest["config"]["digest"][7:]])
    layer = m["blobs/sha256/" + manifest["layers"][0]["digest"][7:]]
    assert cfg["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    assert cfg["config"]["User"] == "10001" and cfg["config"]["Entrypoint"] == ["/bin/tool"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        tool = tf.getmember("bin/tool")
        assert tool.mode == 0o755 and tool.uid == 0 and tf.getmember("bin").isdir()


@pytest.mark.parametrize("path", ["/", "/../etc/passwd", "a/../../b"])
def test_image_paths_outside_the_root_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="bad image path"):
        ociarchive.layer([ociarchive.ImageFile(path, b"")])


def test_an_image_name_needs_a_tag() -> None:
    with pytest.raises(ValueError, match="needs a tag"):
        ociarchive.oci_archive("localhost/x/tool", [], entrypoint=["/x"])
