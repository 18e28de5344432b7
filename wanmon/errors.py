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


def user_name() -> str:
    import os
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def os_cause(exc: OSError) -> str:
    """What an OSError means for the operator, in a few words (which user, for permissions)."""
    import errno

    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}: free space on it"
    if exc.errno == errno.EDQUOT:
        return f"user {user_name()}'s disk quota is used up{where}"
    if exc.errno == errno.EROFS:
        return f"the file system is read-only{where}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied for user {user_name()}{where}: run as the user that owns these files, or fix their permissions"
    return f"{exc.strerror or exc}{where}"


def means_damage(text: str) -> bool:
    """Does SQLite's message say the file is damaged (not merely unreadable or absent)?"""
    return "malformed" in text or "not a database" in text


def _no_space(path: object) -> bool:
    """The file system holding `path` has no block left (SQLite says "disk I/O error" when the
    WAL cannot grow)."""
    import os
    from pathlib import Path

    if not path:
        return False
    try:
        st = os.statvfs(Path(str(path)).parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def sqlite_cause(exc: Exception, path: object = None) -> str:
    """What an sqlite3 error on the store means, in a few words: disk full, read-only, locked, damaged."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    store = f"the store {path}" if path else "the store"
    if (
        name.startswith("SQLITE_FULL")
        or "disk is full" in text
        or ((name.startswith("SQLITE_IOERR") or "I/O error" in text) and _no_space(path))
    ):
        return (
            f"the disk holding {store} is full: free space on it; the cycles recorded before are intact, "
            "this one was not recorded"
        )
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return f"{store} cannot be written: its file system is read-only, or user {user_name()} may not write it"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        who = f"`fuser -v {path}` names it" if path else "`fuser -v` on the store file names it"
        return (
            f"{store} is locked by another process for more than 10 s (a long transaction, a stuck tool; "
            f"{who}); nothing was recorded by this run, try again once it lets go"
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or means_damage(text):
        return (
            f"{store} is damaged ({text}): run `wanmon store check`, then restore the last good backup "
            "(README, 'Backup and restore')"
        )
    if name.startswith(("SQLITE_PERM", "SQLITE_CANTOPEN", "SQLITE_AUTH")):
        return f"{store} cannot be opened by user {user_name()} ({text}): check the file's and its folder's permissions"
    if name.startswith("SQLITE_IOERR") or "I/O error" in text:
        return f"disk I/O error on {store} ({text}): check free space and the disk (dmesg)"
    return f"{store}: {text}"


def describe(exc: BaseException) -> str:
    """One line for the log and `status`: the operator's message, the machine's cause, or the bug's type."""
    import sqlite3

    if isinstance(exc, WanmonError):
        return str(exc)
    if isinstance(exc, OSError):
        return os_cause(exc)
    if isinstance(exc, sqlite3.Error):
        return sqlite_cause(exc)
    return f"internal error {type(exc).__name__}: {exc}"
