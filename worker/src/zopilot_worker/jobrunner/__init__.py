"""The job runner (``zopilot-worker run-job``): one DocumentJob attempt in a worker pod.

Modules: ``specfile`` (spec from file/env), ``fetch`` (sources),
``runner`` (documents through the engine), ``output`` (results files),
``report`` (progress, the 4 KiB summary), ``exitcodes`` (the contract with the
operator), ``observability`` (/metrics, /health while it runs),
``entrypoint`` (all of it in order).
"""

from zopilot_worker.jobrunner.entrypoint import RunJobOptions, run_job
from zopilot_worker.jobrunner.exitcodes import EXIT_OK, EXIT_PERMANENT, EXIT_RETRIABLE

__all__ = ["EXIT_OK", "EXIT_PERMANENT", "EXIT_RETRIABLE", "RunJobOptions", "run_job"]
