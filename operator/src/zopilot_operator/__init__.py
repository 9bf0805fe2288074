"""ZopilotGPU operator: plans, admits by GPU memory (DCGM via Prometheus), runs DocumentJobs.

Layers (imports point down only):

* edges, the only I/O: ``kube`` (Kubernetes API, error translation),
  ``prometheus`` (DCGM metrics); ``main``/``handlers`` wire kopf to the core;
* orchestration, pure: ``scheduler`` (one admission round: objects in, status
  updates out), ``lifecycle`` (create -> plan/queue; attempt -> pod, outcome,
  retry);
* domain, pure: ``admission`` (queue order, best fit, backfill, starvation),
  ``gpus`` (inventory), ``reservations`` (claims), ``planning`` (adapter over
  zopilot_common.planner), ``podbuilder``, ``outcome``, ``retry``, ``status``,
  ``conditions``, ``jobs``;
* vocabulary and plumbing: ``reasons``, ``errors``, ``settings``, ``metrics``,
  ``clock``; ``testing`` holds chained builders for tests.
"""
