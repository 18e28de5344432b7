"""`pip install .` (not editable) gives a working `wanmon` with its templates."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_installs_package_and_templates(tmp_path):
    wheel_dir = tmp_path / "wheel"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = wheel_dir.glob("wanmon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {p.name for p in (REPO / "templates").iterdir() if p.is_file()}
    assert shipped and all(f"wanmon/templates/{n}" in names for n in shipped), names
    assert "wanmon/probes/icmp.py" in names
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    code = (
        "import importlib.resources, wanmon, sys;"
        "print(wanmon.__file__);"
        "print(sorted(p.name for p in importlib.resources.files('wanmon.templates').iterdir()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    where, listed = r.stdout.splitlines()
    assert where.startswith(str(target)), where  # the installed copy, not the checkout
    assert all(n in listed for n in shipped)
    r = subprocess.run([sys.executable, "-m", "wanmon", "--version"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "wanmon" in r.stdout
    # every module of the checkout must be in the installed copy (a forgotten subpackage breaks `check`)
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "wanmon").rglob("*.py")
                     if p.name != "__main__.py")
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    r = subprocess.run([sys.executable, "-c", code, *modules], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # and the installed copy runs a cycle and renders the page from its own templates
    from conftest import MINIMAL

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "sites.toml").write_text(MINIMAL, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "wanmon", "--config", "sites.toml", "check"], cwd=tmp_path / "run",
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "UBND huyện Tiên Du" in (tmp_path / "run" / "public" / "index.html").read_text(encoding="utf-8")
    assert "UBND huyện Tiên Du" in (tmp_path / "run" / "public" / "tree.html").read_text(encoding="utf-8")
