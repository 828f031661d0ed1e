"""The prepared GPU check (benchmarks/gpu/check.py) on the CPU: its --dry-run writes every file
with the right structure, the bench/layers models agree with torch's, a part over its time limit
is killed with its whole process group, and the result parsers read what pytest writes."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
CHECK = GPU / "check.py"
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod                       # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


check = _load("knetc_gpu_check", CHECK)


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    """One --dry-run of the whole check: (output folder, completed process, seconds)."""
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ)
    env.pop("OUT", None)
    t = time.monotonic()
    p = subprocess.run([sys.executable, str(CHECK), str(out), "--dry-run", "--budget", "120"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=180)
    return out, p, time.monotonic() - t


def test_dry_run_writes_the_files(dry):
    out, p, seconds = dry
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    names = sorted(f.name for f in out.iterdir())
    assert names == sorted(check.FILES)
    assert len(names) <= 8                        # what the device tool returns
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    assert all(f.is_file() for f in out.iterdir())    # no sub-folders
    assert seconds < 60                           # ~12 s on an idle 2-core machine


def test_dry_run_figures(dry):
    out = dry[0]
    fig = json.loads((out / "figures.json").read_text())
    assert fig["meta"]["dry_run"] is True
    assert {k: v["status"] for k, v in fig["parts"].items()} == {
        "env": "dry-run", "tests": "dry-run", "bench": "dry-run", "layers": "dry-run",
        "dlf": "dry-run"}
    assert fig["tests"]["source"] == "collect-only" and fig["tests"]["tests"] > 0
    env = json.loads((out / "env.json").read_text())
    assert env["python"] == sys.version.split()[0] and env["selftest_cudnn"] == "dry-run"
    bench = fig["bench"]
    assert bench == json.loads((out / "bench.json").read_text())
    assert bench["status"] == "dry-run"
    assert [r["model"] for r in bench["rows"]] == ["housing", "softmax", "mlp", "lenet", "charlm"]
    for r in bench["rows"]:
        assert r["status"] == "dry-run", r
        assert r["knetc_first_step_s"] >= r["knetc_compile_s"] >= 0
        assert r.get("knetc_ms") is None              # nothing timed in a dry run
        if HAVE_TORCH:                            # the torch model is knetc's model
            assert r["verified"] and r["grad_err"] < 1e-4 and r["loss_rel_diff"] < 1e-5, r
    layers = fig["layers"]
    assert layers["status"] == "dry-run"
    layer_mod_names = [r["layer"] for r in layers["rows"]]
    assert len(layer_mod_names) == 15 and "lstm charlm" in layer_mod_names
    for r in layers["rows"]:
        assert r["status"] == "dry-run" and not r.get("error"), r
        if HAVE_TORCH:
            assert r["err"] < 1e-4, r


def test_dry_run_summary(dry):
    out, p, _ = dry
    md = (out / "summary.md").read_text()
    assert "| model | knetc ms | knetc+graph ms | torch eager ms | torch.compile ms |" in md
    assert "| layer | size |" in md and "| env | dry-run |" in md
    lines = p.stdout.strip().splitlines()
    assert lines[-1].startswith("bench graph_step n/a") or lines[-1].startswith("bench charlm")
    assert any(x.startswith("TESTS: 0 passed, 0 failed") for x in lines)
    assert len(p.stdout) < 12000                  # the device tool keeps the last 12,000 chars


def test_part_limits_share_the_budget():
    todo = ["env", "tests", "bench", "layers"]
    assert check.part_limit("env", todo, 10000) == check.ENV_CAP
    t = check.part_limit("tests", todo[1:], 300)
    b = check.part_limit("bench", todo[2:], 300 - t)
    layers = check.part_limit("layers", todo[3:], 300 - t - b)
    assert abs(t + b + layers - 300) < 1e-9        # the last part gets all that is left
    # time a part leaves unused goes to the later parts
    assert check.part_limit("bench", todo[2:], 300 - 1) > b


def test_run_part_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(c.pid))
        print("started", flush=True)
        time.sleep(60)
    """)
    t = time.monotonic()
    info = check.run_part([sys.executable, "-c", code], 2.0, tmp_path / "log", dict(os.environ))
    assert info["status"] == "timeout" and time.monotonic() - t < 15
    assert "started" in (tmp_path / "log").read_text()
    grandchild = int(pidfile.read_text())
    for _ in range(50):                           # the grandchild died with the group
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the part's child process outlived the time limit")


def test_run_part_status(tmp_path):
    ok = check.run_part([sys.executable, "-c", "print('hi')"], 30, tmp_path / "a", dict(os.environ))
    assert ok["status"] == "ok" and ok["rc"] == 0
    bad = check.run_part([sys.executable, "-c", "raise SystemExit(3)"], 30, tmp_path / "b",
                         dict(os.environ))
    assert bad["status"] == "rc=3"


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1"
failures="1" skipped="2" tests="7"><testcase classname="tests.gpu.test_a" name="test_x"/>
<testcase classname="tests.gpu.test_a" name="test_y"><failure message="AssertionError: 1 != 2&#10;more">
trace</failure></testcase><testcase classname="tests.gpu.test_b" name="test_z"><error
message="RuntimeError: boom">trace</error></testcase></testsuite></testsuites>"""

LOG = """tests/gpu/test_a.py::test_x PASSED                                        [ 14%]
tests/gpu/test_a.py::test_y FAILED                                        [ 28%]
tests/gpu/test_a.py::test_s SKIPPED (needs CuPy and a CUDA GPU)           [ 42%]
tests/gpu/test_b.py::test_z[float32-3] PASSED                             [ 57%]
FAILED tests/gpu/test_a.py::test_y - AssertionError: 1 != 2
"""


def test_parse_junit_and_log(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    j = check.parse_junit(tmp_path / "junit.xml")
    assert (j["tests"], j["passed"], j["failed"], j["errors"], j["skipped"]) == (7, 3, 1, 1, 2)
    assert j["failures"] == ["FAILURE tests.gpu.test_a::test_y - AssertionError: 1 != 2",
                             "ERROR tests.gpu.test_b::test_z - RuntimeError: boom"]
    assert check.parse_junit(tmp_path / "missing.xml") is None
    (tmp_path / "pytest.log").write_text(LOG)
    c = check.parse_log(tmp_path / "pytest.log")       # a run killed before junit.xml
    assert (c["tests"], c["passed"], c["failed"], c["skipped"]) == (4, 2, 1, 1)
    assert c["failures"] == ["FAILED tests/gpu/test_a.py::test_y - AssertionError: 1 != 2"]
    r = check.tests_result(tmp_path, dry=False)        # junit counts, -rfE's failure lines
    assert r["source"] == "junit" and r["failures"] == c["failures"]
    (tmp_path / "junit.xml").unlink()
    assert check.tests_result(tmp_path, dry=False)["source"] == "log"


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_count_launches_reads_device_events():
    sys.path.insert(0, str(GPU))
    try:
        bench = _load("knetc_gpu_bench", GPU / "bench.py")
    finally:
        sys.path.remove(str(GPU))
    from torch.autograd import DeviceType

    class Ev:
        def __init__(self, name, dt):
            self.name, self.device_type = name, dt
    events = [Ev("volta_sgemm_128x64_nn", DeviceType.CUDA), Ev("cupy_add", DeviceType.CUDA),
              Ev("Memcpy HtoD (Pageable -> Device)", DeviceType.CUDA),
              Ev("Memset (Device)", DeviceType.CUDA), Ev("aten::mm", DeviceType.CPU),
              Ev("cudaLaunchKernel", DeviceType.CPU), Ev("cuLaunchKernel", DeviceType.CPU),
              Ev("cudaGraphLaunch", DeviceType.CPU)]
    c = bench.count_launches(events)
    assert c.pop("by_name") == {"volta_sgemm_128x64_nn": (1, 0.0), "cupy_add": (1, 0.0)}
    assert c == {"kernels": 2, "memcpy": 1, "memset": 1, "api": 3}
    assert bench.fmt(0.012345) == "0.0123" and bench.fmt(None) == "-" and bench.fmt(12345.0) == "12345"


def test_scripts_reject_unknown_names(capsys):
    sys.path.insert(0, str(GPU))                  # layers.py imports bench.py's helpers
    try:
        bench = _load("knetc_gpu_bench", GPU / "bench.py")
        layers = _load("knetc_gpu_layers", GPU / "layers.py")
    finally:
        sys.path.remove(str(GPU))
    assert bench.parse_args(["--models", "lenet,charlm"]).model_list == ["lenet", "charlm"]
    for parse, opt in ((bench.parse_args, "--models"), (layers.parse_args, "--layers")):
        with pytest.raises(SystemExit) as e:
            parse([opt, "nosuch"])
        assert e.value.code == 2 and "nosuch" in capsys.readouterr().err
    p = subprocess.run([sys.executable, str(CHECK), "--parts", "nosuch"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "nosuch" in p.stderr


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_host_mode_runs_the_timing_code(tmp_path, capsys):
    """--host: the non-dry path (warm-up, interleaved rounds, ratios, tables) on NumPy + torch CPU."""
    sys.path.insert(0, str(GPU))
    try:
        bench = _load("knetc_gpu_bench", GPU / "bench.py")
        layers = _load("knetc_gpu_layers", GPU / "layers.py")
    finally:
        sys.path.remove(str(GPU))
    assert bench.main(["--host", "--models", "housing,charlm", "--rounds", "2", "--no-compile",
                       "--json", str(tmp_path / "b.json"), "--md", str(tmp_path / "b.md")]) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["status"] == "host" and len(doc["rows"]) == 2
    for r in doc["rows"]:
        assert r["status"] == "host" and r["knetc_ms"] > 0 and r["torch_ms"] > 0, r
        assert r["ratio"] == pytest.approx(r["knetc_ms"] / r["torch_ms"])
        assert r["graph_error"]                       # graphs are GPU-only: recorded, not raised
    assert (tmp_path / "b.md").read_text().startswith("| model | knetc ms |")
    assert layers.main(["--host", "--layers", "conv4 lenet2,lstm charlm", "--rounds", "2",
                        "--json", str(tmp_path / "l.json")]) == 0
    rows = json.loads((tmp_path / "l.json").read_text())["rows"]
    assert [r["layer"] for r in rows] == ["conv4 lenet2", "lstm charlm"]
    for r in rows:
        assert r["knetc_ms"] > 0 and r["torch_fwd_ms"] > 0 and r["err"] < 1e-4, r
    capsys.readouterr()


@pytest.mark.skipif(not list((ROOT / ".whl").glob("gast-*.whl")), reason="no gast wheel in .whl/")
def test_child_env_unpacks_the_wheels_when_gast_is_missing(tmp_path, monkeypatch):
    import shutil
    (tmp_path / ".whl").mkdir()
    for w in (ROOT / ".whl").glob("gast-*.whl"):
        shutil.copy(w, tmp_path / ".whl")
    real = importlib.util.find_spec
    monkeypatch.setattr(check, "ROOT", tmp_path)
    monkeypatch.setattr(check.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gast" else real(name, *a))
    env, notes = check.child_env()
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths[0] == str(tmp_path) and "rc=0" in notes[0], notes
    target = paths[1]
    assert (Path(target) / "gast").is_dir()
    shutil.rmtree(target)
