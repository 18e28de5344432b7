#!/usr/bin/env python3
"""What each speed mechanism of `wanmon check` buys, measured (issue 21: every one kept
names its payoff; what buys nothing measurable at 2,000 sites goes).

For each mechanism, a copy of the `wanmon` package with that one mechanism switched off
(a text substitution in the copy; the working tree is not touched) runs `wanmon check`
against N live loopback sites in a private network namespace, as cron does (no terminal,
the shipped defaults of bench/icmp_sweep.py: 3 echoes 200 ms apart, 200 ms timeout). The
variants and fping (the same targets, `fping -q -c 3 -p 200 -i 0.1`) run in alternating
order, round after round, after 22 warm-up checks per variant (cron's steady state); the
table gives medians of wall and CPU (user + sys of the process tree, from wait4) and each
variant's difference from the shipped code. fping's own figures say how busy the host was.

    sudo .venv/bin/python bench/mechanisms.py [--sites 2000] [--rounds 9]

Only 127.0.0.0/8 inside the namespace `wmmech-<pid>` is contacted; the namespace and the
temporary folder are removed on exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _lab
from _measure import compile_package

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (file in the package, text, replacement) - each switches one mechanism off
VARIANTS = {
    # The forked sweep was measured here too (the script at commit df844ce) and dropped: see
    # bench/README.md, "Speed mechanisms".
    "GC thresholds (cli.GC_THRESHOLDS)": ("cli.py", "    gc.set_threshold(*GC_THRESHOLDS)\n", "\n"),
    "os._exit at the end (cli._leave)": ("cli.py", "    logging.shutdown()\n    os._exit(code)", "    sys.exit(code)"),
    "parsed-TOML cache (config._parse_toml)": ("config.py", "_TOML_CACHE_MIN = 64 * 1024", "_TOML_CACHE_MIN = 1 << 62"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=22)
    ap.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"))
    args = ap.parse_args()
    fping = shutil.which("fping")
    if os.geteuid() != 0 or not fping:
        print("bench/mechanisms.py: needs root (a network namespace) and fping (apt-get install fping)", file=sys.stderr)
        return 2
    ns = f"wmmech-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="wanmon-mech-")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        targets = _lab.make_targets(args.sites, 0)
        runs: dict[str, list[str]] = {}
        env: dict[str, dict] = {}
        for name in ["shipped", *VARIANTS]:
            d = os.path.join(tmp, f"v{len(runs)}")
            shutil.copytree(os.path.join(REPO, "wanmon"), os.path.join(d, "wanmon"),
                            ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copytree(os.path.join(REPO, "templates"), os.path.join(d, "wanmon", "templates"))
            if name != "shipped":
                f, old, new = VARIANTS[name]
                p = os.path.join(d, "wanmon", f)
                with open(p, encoding="utf-8") as fh:
                    text = fh.read()
                if text.count(old) != 1:
                    print(f"bench/mechanisms.py: {name}: the code changed ({old!r} not found once in {f}); update VARIANTS",
                          file=sys.stderr)
                    return 2
                with open(p, "w", encoding="utf-8") as fh:
                    fh.write(text.replace(old, new))
            compile_package(args.python, d)
            cfg = os.path.join(d, "sites.toml")
            with open(cfg, "w", encoding="utf-8") as fh:
                fh.write(_lab.wanmon_config(targets, os.path.join(d, "wanmon.db"), count=3, interval_ms=200,
                                            timeout_ms=200, rate_pps=10000))
                fh.write(f'\n[page]\nout_dir = "{d}/public"\n')
            runs[name] = [args.python, "-m", "wanmon", "--config", cfg, "check"]
            env[name] = {**os.environ, "PYTHONPATH": d, "XDG_CACHE_HOME": os.path.join(d, "cache")}
        runs["fping"] = [fping, "-q", "-c", "3", "-p", "200", "-i", "0.1", *[t.address for t in targets]]
        env["fping"] = dict(os.environ)

        def once(name: str) -> tuple[float, float]:
            t = time.monotonic()
            pid = os.fork()
            if pid == 0:
                fd = os.open(os.devnull, os.O_RDWR)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.execvpe("ip", ["ip", "netns", "exec", ns, *runs[name]], env[name])
            _, status, ru = os.wait4(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if code not in (0, 1) or (code and name != "fping"):
                raise SystemExit(f"bench/mechanisms.py: {name} exited {code}")
            return time.monotonic() - t, ru.ru_utime + ru.ru_stime

        for name in runs:
            if name != "fping":
                print(f"warming up: {name}", file=sys.stderr, flush=True)
                for _ in range(args.warmup):
                    once(name)
        got: dict[str, list[tuple[float, float]]] = {n: [] for n in runs}
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}", file=sys.stderr, flush=True)
            for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
                got[name].append(once(name))
        med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for n, v in got.items()}
        base = med["shipped"]
        with open("/proc/loadavg") as fh:
            load = fh.read().split()[0]
        print(f"wanmon check, {args.sites} live sites, medians of {args.rounds} rounds; load {load}")
        print(f"{'variant':44s} {'wall s':>7s} {'CPU s':>7s} {'wall vs shipped':>16s} {'CPU vs shipped':>15s}")
        for n, (w, c) in med.items():
            dw, dc = ("", "") if n in ("shipped", "fping") else (f"{(w - base[0]) * 1000:+.0f} ms", f"{(c - base[1]) * 1000:+.0f} ms")
            label = n if n in ("shipped", "fping") else f"without {n}"
            print(f"{label:44s} {w:7.3f} {c:7.3f} {dw:>16s} {dc:>15s}")
        return 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
