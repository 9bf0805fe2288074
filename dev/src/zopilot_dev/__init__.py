"""The ZopilotGPU local cluster, for tests and the demo.

Real where it can be: etcd, kube-apiserver (RBAC + admission), kube-scheduler,
kube-controller-manager (all run by kwokctl's binary runtime from binaries we
build), kubectl, helm, Prometheus. Simulated where it must be: GPU nodes
(kwok), DCGM exporter numbers (``dcgm``), container execution (``podrunner``).
"""
