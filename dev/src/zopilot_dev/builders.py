"""Chained builders of DocumentJob manifests, for tests and the demo.

DocumentJobBuilder("march", "finance").volume("inbox", "march/*.pdf")
    .classify(["invoice", "receipt"], model="tiny-mixtral").gpu_memory("10Gi").obj()
"""

from __future__ import annotations

import copy
from typing import Any

from zopilot_common.spec import API_VERSION, KIND


class DocumentJobBuilder:
    def __init__(self, name: str, namespace: str = "default") -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"documents": [], "tasks": ["extract"]},
        }

    @property
    def _spec(self) -> dict[str, Any]:
        return self._obj["spec"]  # type: ignore[no-any-return]

    def url(self, url: str) -> DocumentJobBuilder:
        self._spec["documents"].append({"url": url})
        return self

    def config_map(self, name: str, key: str) -> DocumentJobBuilder:
        self._spec["documents"].append({"configMap": {"name": name, "key": key}})
        return self

    def volume(self, claim: str, path: str) -> DocumentJobBuilder:
        self._spec["documents"].append({"volume": {"claimName": claim, "path": path}})
        return self

    def tasks(self, *tasks: str) -> DocumentJobBuilder:
        self._spec["tasks"] = list(tasks)
        return self

    def classify(
        self, labels: list[str], model: str = "tiny-mixtral", quantization: str = "none"
    ) -> DocumentJobBuilder:
        if "classify" not in self._spec["tasks"]:
            self._spec["tasks"] = [*self._spec["tasks"], "classify"]
        self._spec["classify"] = {"labels": labels, "model": model, "quantization": quantization}
        return self

    def output(self, claim: str, path: str = "") -> DocumentJobBuilder:
        self._spec["output"] = {"volume": {"claimName": claim, "path": path}}
        return self

    def gpu_memory(self, quantity: str | int) -> DocumentJobBuilder:
        self._spec["gpuMemory"] = quantity
        return self

    def priority(self, p: int) -> DocumentJobBuilder:
        self._spec["priority"] = p
        return self

    def retries(self, n: int) -> DocumentJobBuilder:
        self._spec["retries"] = n
        return self

    def deadline(self, seconds: int) -> DocumentJobBuilder:
        self._spec["deadlineSeconds"] = seconds
        return self

    def set(self, path: str, value: Any) -> DocumentJobBuilder:
        """Set any field by dotted path (e.g. for invalid manifests in tests)."""
        node = self._obj
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        return self

    def drop(self, path: str) -> DocumentJobBuilder:
        node = self._obj
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)
