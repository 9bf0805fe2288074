"""Exit codes of ``zopilot-worker run-job``: the contract with the operator.

Defined here once; the operator (which must not import the worker
distribution, it would pull torch into its image) mirrors these three values
and reads the termination message for the details.

- ``EXIT_OK`` (0): the job ran to completion. Documents that failed
  permanently (corrupt file, 404, unsupported type) are recorded in
  results.jsonl and counted in the summary's ``failed``; retrying would not
  change them, so they do not fail the job.
- ``EXIT_PERMANENT`` (2): the job cannot succeed as specified: invalid spec,
  unknown model, model missing from the volume, doctor failure (NumPy ABI), no
  output location writable, or every document failed permanently. Do not retry.
  (2 is also what argparse uses for bad command lines, which are permanent too.)
- ``EXIT_RETRIABLE`` (75, sysexits' ``EX_TEMPFAIL``): a temporary condition
  stopped the job or spoiled part of it: the GPU-memory gate refused to load or
  run the model, or a document could not be fetched for a retriable reason
  (timeout, 5xx, 429). Results so far are written; retry the attempt
  (spec.retries, with backoff).
- ``EXIT_GPU_OOM`` (76): CUDA ran out of memory loading or running the model:
  the attempt's memory plan was too small. Retriable, and the operator re-plans
  the next attempt with more GPU memory instead of repeating it as is (the GPU
  analogue of the kubelet's OOMKilled, which only covers host memory).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PERMANENT = 2
EXIT_RETRIABLE = 75
EXIT_GPU_OOM = 76

EXIT_CODES = {
    "ok": EXIT_OK,
    "permanent": EXIT_PERMANENT,
    "retriable": EXIT_RETRIABLE,
    "gpu_oom": EXIT_GPU_OOM,
}


def exit_code_for_error(retriable: bool, code: str) -> int:
    """The exit code of a job stopped by a worker error (``WorkerError.code``)."""
    if code == "gpu_out_of_memory":
        return EXIT_GPU_OOM
    return EXIT_RETRIABLE if retriable else EXIT_PERMANENT


def exit_code_for(
    *, documents: int, done: int, failed_permanent: int, failed_retriable: int
) -> int:
    """The exit code of a job that ran through its document list (no fatal stop)."""
    if failed_retriable:
        return EXIT_RETRIABLE
    if documents and done == 0 and failed_permanent == documents:
        return EXIT_PERMANENT
    return EXIT_OK
