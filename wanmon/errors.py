"""Exceptions that carry a message meant for the operator, and exit codes."""

from __future__ import annotations

# Exit codes of every command (documented in the README).
EXIT_OK = 0
EXIT_FAILURE = 1  # the command could not do its job (no ICMP permission, store unwritable...)
EXIT_CONFIG = 2  # the configuration is invalid: nothing was run or written
EXIT_BUSY = 75  # EX_TEMPFAIL: another `wanmon check` holds the store lock


class WanmonError(Exception):
    """An error whose message tells the operator what happened and what to do."""

    exit_code = EXIT_FAILURE


class ConfigError(WanmonError):
    """The configuration has one or more problems; `problems` lists each with its place."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        n = len(problems)
        head = f"{path}: {n} problem{'s' if n != 1 else ''} found"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in problems))


class ProbePermissionError(WanmonError):
    """The process may not send ICMP echo requests."""


class StoreBusyError(WanmonError):
    """Another process holds the store's cycle lock."""

    exit_code = EXIT_BUSY
