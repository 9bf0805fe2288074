"""Pure code shared by the ZopilotGPU operator and worker.

Nothing here may import torch, transformers, kopf or the Kubernetes client:
the operator image depends on this distribution and must stay light.
"""
