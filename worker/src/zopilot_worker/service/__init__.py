"""The worker's HTTP service: ``create_app`` (FastAPI) and the uvicorn runners."""

from zopilot_worker.service.app import create_app
from zopilot_worker.service.server import BackgroundServer, serve

__all__ = ["BackgroundServer", "create_app", "serve"]
