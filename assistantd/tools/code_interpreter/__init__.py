"""The code interpreter: a sandboxed, stateful Python per thread, with files in and out.

The engine sees only this surface::

    ci = CodeInterpreter(sandbox_config_from_settings(settings))
    await ci.start()                      # checks the host, fills the pool in the background
    if not ci.available: ...              # ci.unavailable_reason says why (and what to install)
    result = await ci.execute(f"{project}:{thread_id}", code, files=[InputFile(...)])
    await ci.stop()

Module map: ``interpreter`` (sessions, pool, idle expiry), ``sandbox`` (one bwrap jail with its kernel),
``host`` (what this machine offers and the exact jail command), ``kernel`` (the Jupyter protocol from
the server's side), ``kernel_main`` (runs inside the jail), ``files`` (moving bytes in and out without
trusting the jail), ``cgroups``, ``uids``, ``seccomp``, ``config``.
"""

from .config import SandboxConfig, sandbox_config_from_settings
from .interpreter import (
    CodeInterpreter,
    CodeInterpreterError,
    Execution,
    InputFile,
    OutputFile,
    SandboxUnavailable,
    TooManySessions,
)

__all__ = [
    "CodeInterpreter",
    "CodeInterpreterError",
    "Execution",
    "InputFile",
    "OutputFile",
    "SandboxConfig",
    "SandboxUnavailable",
    "TooManySessions",
    "sandbox_config_from_settings",
]
