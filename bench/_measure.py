"""Measuring a benchmarked tool: one run of a command to completion, with the
tool's own wall-clock time, CPU time and peak RSS (wait4 rusage taken by a
tiny fork/exec helper), plus the table and number formatting the bench
scripts share.  Used by bench/icmp_sweep.py (through _lab) and
bench/snmp_poll.py; its reference trees (wanmon at a git revision, run beside
this one) and compile_package by bench/report.py, render.py and mechanisms.py.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence


class LabError(RuntimeError):
    """The lab (namespace, agents, tools) could not be set up or verified."""


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def default_python() -> str:
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, **kw)


# --------------------------------------------------------------------------
# measured child processes
#
# Why a C helper: ru_maxrss as returned by wait4() for a direct child of this
# Python process is never smaller than *this* process's own peak RSS, because
# the kernel folds the pre-exec address space (borrowed by vfork/posix_spawn,
# or copied by fork) into the child's high-water mark at execve().  So the
# bench's own memory would leak into the tools' figures.  The tiny helper
# below is exec'd once per run, enters the network namespace with setns()
# when given one ("-": stay in the current one), forks the tool from its own
# ~1 MiB image and reports the tool's wait4() rusage (user, sys, maxrss) and
# a CLOCK_MONOTONIC wall time.  The rusage of a reaped child includes every
# descendant it reaped in turn (CPU summed, maxrss the largest single one).

_HELPER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* wm_rusage REPORT NETNS_FILE|- PROG ARGS... */
int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: wm_rusage REPORT NETNS|- PROG ARGS...\n"); return 125; }
    if (strcmp(argv[2], "-") != 0) {
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (fd < 0) { perror(argv[2]); return 125; }
        if (setns(fd, CLONE_NEWNET) != 0) { perror("setns"); return 125; }
        close(fd);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 125; }
    if (pid == 0) { execvp(argv[3], argv + 3); perror(argv[3]); _exit(127); }
    int status = 0;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) { perror("wait4"); return 125; }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int rc = WIFEXITED(status) ? WEXITSTATUS(status)
           : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 125;
    FILE *f = fopen(argv[1], "w");
    if (!f) { perror(argv[1]); return 125; }
    fprintf(f, "wall_ns=%lld\nutime_us=%lld\nstime_us=%lld\nmaxrss_kib=%ld\nrc=%d\n",
            (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec),
            (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec,
            ru.ru_maxrss, rc);
    fclose(f);
    return rc;
}
"""


def build_helper(workdir: str) -> str | None:
    """Compile the rusage helper into workdir; None if no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    src = os.path.join(workdir, "wm_rusage.c")
    exe = os.path.join(workdir, "wm_rusage")
    with open(src, "w") as f:
        f.write(_HELPER_C)
    r = _run([cc, "-O2", "-o", exe, src])
    if r.returncode != 0:
        raise LabError(f"compiling {src}: {r.stderr.strip()}")
    return exe


_current_children: set[int] = set()  # process-group ids we started


@dataclass
class RunResult:
    argv: list[str]
    rc: int | None
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    outer_wall_s: float          # wall seen from Python, incl. spawn overhead
    children_cpu_delta_s: float  # RUSAGE_CHILDREN delta, cross-check
    method: str                  # "helper" or "direct"
    timed_out: bool = False
    stdout_path: str = ""
    stderr_path: str = ""

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


class Runner:
    """Runs a command (inside a network namespace when netns is given) and
    measures it.

    With the helper (see above) the figures are the tool's own; without it
    (no C compiler) the command is started directly, or as `ip netns exec NS
    cmd`, and wait4() on it is used, so ru_maxrss has the bench's own peak
    RSS as a floor (reported as method "direct")."""

    def __init__(self, netns: str | None, helper: str | None) -> None:
        self.netns = netns
        self.helper = helper

    @property
    def method(self) -> str:
        return "helper" if self.helper else "direct"

    def run(self, argv: list[str], *, stdout_path: str, stderr_path: str,
            timeout_s: float, cwd: str | None = None,
            env: dict[str, str] | None = None) -> RunResult:
        report = stdout_path + ".rusage"
        if self.helper:
            ns = f"/run/netns/{self.netns}" if self.netns else "-"
            full = [self.helper, report, ns] + argv
        elif self.netns:
            full = ["ip", "netns", "exec", self.netns] + argv
        else:
            full = list(argv)
        rr = run_measured(full, stdout_path=stdout_path, stderr_path=stderr_path,
                          timeout_s=timeout_s, cwd=cwd, env=env)
        rr.argv = argv
        rr.method = self.method
        if self.helper:
            vals: dict[str, int] = {}
            try:
                with open(report) as f:
                    for line in f:
                        k, _, v = line.strip().partition("=")
                        vals[k] = int(v)
            except (OSError, ValueError):
                vals = {}
            if vals:
                rr.wall_s = vals["wall_ns"] / 1e9
                rr.user_s = vals["utime_us"] / 1e6
                rr.sys_s = vals["stime_us"] / 1e6
                rr.maxrss_kib = vals["maxrss_kib"]
                rr.rc = vals["rc"]
            elif rr.rc in (0, None):
                rr.rc = 125  # helper failed without saying why
        return rr


def run_measured(argv: list[str], *, stdout_path: str, stderr_path: str,
                 timeout_s: float, cwd: str | None = None,
                 env: dict[str, str] | None = None) -> RunResult:
    """Run argv to completion, stdout/stderr to files, and return wall-clock
    time plus the child's rusage as reported by wait4 (user+sys CPU and
    ru_maxrss, which includes any descendants the child reaped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, cwd=cwd, env=env,
                                start_new_session=True)
    pgid = proc.pid
    _current_children.add(pgid)
    timed_out = threading.Event()
    lock = threading.Lock()
    reaped = False

    def _kill() -> None:
        with lock:
            if not reaped:  # the group id is ours only while the leader is unreaped
                timed_out.set()
                _killpg(pgid, quiet=True)

    timer = threading.Timer(timeout_s, _kill)
    timer.daemon = True
    timer.start()
    # wait without reaping, so the process group id stays ours while we
    # clear anything the child left running in it; then reap with wait4
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    wall = time.perf_counter() - t0
    with lock:
        timer.cancel()
        _killpg(pgid, quiet=True)
        reaped = True
        _current_children.discard(pgid)
        _, status, ru = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # we reaped it ourselves; keep Popen quiet
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    delta = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return RunResult(argv=argv, rc=rc, wall_s=wall, user_s=ru.ru_utime,
                     sys_s=ru.ru_stime, maxrss_kib=ru.ru_maxrss, outer_wall_s=wall,
                     children_cpu_delta_s=delta, method="direct",
                     timed_out=timed_out.is_set(),
                     stdout_path=stdout_path, stderr_path=stderr_path)


def _killpg(pgid: int, quiet: bool = False) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        if not quiet:
            raise


def kill_current_children() -> None:
    for pgid in list(_current_children):
        _killpg(pgid, quiet=True)


def install_signal_cleanup() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so finally/atexit clean up."""
    def _handler(signum, frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _handler)


# --------------------------------------------------------------------------
# numbers and tables


def median_or_none(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def fmt_count(med: float | None, mx: int | None) -> str:
    """Median count, with the worst run in brackets when it was worse."""
    if med is None:
        return "-"
    s = f"{med:g}"
    if mx is not None and mx > med:
        s += f" (max {mx})"
    return s


# (group, header, min width, cell(row) -> str); consecutive columns with the
# same non-empty group share a "--- group ---" banner above their headers
Column = tuple[str, str, int, Callable[[object], str]]


def render_table(cols: Sequence[Column], rows: Sequence[object], sep: str = "  ") -> list[str]:
    """Right-aligned text table with grouped column banners, as lines."""
    cells = [[fn(r).strip() for (_, _, _, fn) in cols] for r in rows]
    widths = [max([w, len(h)] + [len(row[i]) for row in cells])
              for i, (_, h, w, _) in enumerate(cols)]
    line1, i = [], 0
    while i < len(cols):
        grp = cols[i][0]
        j = i
        while j + 1 < len(cols) and cols[j + 1][0] == grp and grp:
            j += 1
        span = sum(widths[i:j + 1]) + len(sep) * (j - i)
        line1.append((f" {grp} ".center(span, "-") if grp else " " * span))
        i = j + 1
    header = sep.join(h.rjust(widths[k]) for k, (_, h, _, _) in enumerate(cols))
    out = [sep.join(line1).rstrip(), header, "-" * len(header)]
    for row in cells:
        out.append(sep.join(v.rjust(widths[k]) for k, v in enumerate(row)))
    return out


# --------------------------------------------------------------------------
# a reference tree: wanmon as it was at a git revision, run beside this one

ISSUE23_TODAY = "4e9bec4"  # the tree issues 20-24 were filed on (the end of stop 18): issue 23's "today", undated only


def compile_package(python: str, folder: str) -> None:
    """Byte-compile a wanmon package, as `pip install` does (with PYTHONDONTWRITEBYTECODE set, an
    uncompiled tree compiles every module in every run, ~0.3 s, and flatters a comparison)."""
    subprocess.run([python, "-m", "compileall", "-q", os.path.join(folder, "wanmon")], check=True,
                   stdout=subprocess.DEVNULL)


def git_tree(rev: str, dest: str, python: str) -> str | None:
    """wanmon's package and templates/ as they were at `rev`, from this checkout's git history
    (`git archive`), into dest, byte-compiled: run it with PYTHONPATH=dest (its `wanmon` comes
    before the installed one). None, said on stderr, where the history does not hold rev (not a
    git checkout, a shallow clone)."""
    import io
    import tarfile

    r = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", rev, "wanmon", "templates"],
                       capture_output=True)
    if r.returncode != 0:
        log(f"no reference tree {rev}: git archive failed ({r.stderr.decode(errors='replace').strip()[:200]})")
        return None
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        tar.extractall(dest, filter="data")
    compile_package(python, dest)
    return dest


_BUILD_WITH = r"""
import json, sys
from pathlib import Path
bench, tree, module, fn, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
sys.path.insert(0, bench)
m = __import__(module)
assert "wanmon" not in sys.modules, "the bench module imported wanmon before the tree was put first"
sys.path.insert(0, tree)
print(json.dumps(getattr(m, fn)(Path(args[0]), *args[1:]), default=str))
"""


def build_with(python: str, tree: str, module: str, fn: str, *args: Any) -> dict:
    """A bench module's store builder, `module.fn(config path, *args)`, run in a child
    interpreter whose `wanmon` is the reference tree's: the store laid out by its own code (an
    older wanmon refuses a store of a newer schema). The builders are seeded: the same history."""
    bench = os.path.dirname(os.path.abspath(__file__))
    r = _run([python, "-c", _BUILD_WITH, bench, tree, module, fn, json.dumps([str(args[0]), *args[1:]])],
             timeout=3600)
    if r.returncode != 0:
        raise LabError(f"building the reference tree's store failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
