"""Job types: the protocol every job follows, the registry that makes them, the built-ins."""

from daemon.jobs.base import Job, JobContext, JobResult
from daemon.jobs.registry import JobFactory, UnknownJobType
from daemon.jobs.template import TemplateError, names, render

__all__ = [
    "Job",
    "JobContext",
    "JobFactory",
    "JobResult",
    "TemplateError",
    "UnknownJobType",
    "names",
    "render",
]
