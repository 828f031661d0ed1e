"""The prepared GPU check: one command that tests and benchmarks knetc on a CUDA machine.

    python benchmarks/gpu/check.py [OUTDIR] [--dry-run] [--budget SECONDS] [--parts tests,bench,layers,dlf]
                                   [--quick] [--pytest-args "tests/gpu -k cudnn"]

OUTDIR defaults to ``$OUT`` or ``./gpu-check-out``. From the repository root, on a machine with an
NVIDIA GPU, CuPy, PyTorch with CUDA and the cuDNN wheel, it runs, each part in its own process
group under its own time limit (a share of ``--budget``, default 420 s; time a part leaves unused
goes to the parts after it; a part over its limit is killed and the others still report):

1. ``env``: versions, the GPU, ``nvidia-smi -L``, the cuDNN library and the self-tests
   ``knetc.runtime.cudnn.selftest()``, ``knetc.runtime.cudnn.rnn.selftest()``,
   ``knetc.graphs.selftest()`` (each only if importable: 'missing' otherwise) -> ``env.json``;
2. ``tests``: ``pytest -v -rfE -m gpu tests/ --continue-on-collection-errors`` -> ``pytest.log``,
   ``junit.xml`` (``-v`` so that a run killed at its limit can still be counted from the log;
   ``--pytest-args`` replaces ``tests/``);
3. ``bench``: ``benchmarks/gpu/bench.py`` (the tutorial models' training step) -> ``bench.json``;
4. ``layers``: ``benchmarks/gpu/layers.py`` (the cuDNN-backed layers) -> ``layers.json``;
5. ``dlf``: ``benchmarks/dlf.py --device gpu --quick`` (IMDB GRU, CIFAR VGG, ResNet-50 against
   PyTorch) -> its table in ``parts.log``, its figures in ``figures.json``;

then writes ``summary.md`` and ``figures.json`` (everything machine-readable) and prints a compact
summary whose last lines are the test counts, the first failures and the benchmark ratios. The
outputs of env/bench/layers go to ``parts.log``. At most 8 files are written, all in OUTDIR.

knetc is used from the working tree: the repository root goes on the subprocesses' PYTHONPATH
(``knetc/runtime`` is a symlink to ``runtime``), nothing is installed; when ``gast`` or ``tqdm``
is not importable the wheels in ``.whl/`` are unpacked with ``pip install --no-index --no-deps --target``
into a temporary folder that goes on PYTHONPATH too.

``--dry-run`` touches no GPU: env without CUDA calls, ``pytest --collect-only`` of tests/gpu, and
bench/layers with ``--dry-run`` (NumPy + torch CPU at tiny sizes, nothing timed); same files,
'dry-run' statuses, exit status 0 when everything ran. Otherwise the exit status is 0 only when
every part finished and no test failed.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PARTS = ("tests", "bench", "layers", "dlf")
# dlf.py (the DeepLearningFrameworks models, GPU mode) reports into figures.json and parts.log: the
# device tool brings back at most 8 files, and FILES are those 8.
DLF_JSON = Path(os.environ.get("TMPDIR", "/tmp")) / "knetc-gpu-check-dlf.json"
# Shares of the budget; a part's limit is its share of what is left when it starts.
WEIGHTS = {"env": 0.12, "tests": 0.38, "bench": 0.30, "layers": 0.12, "dlf": 0.10}
ENV_CAP = 90.0           # the env part never needs more than this
RESERVE = 12.0           # seconds kept for the kill grace of a part and the summary
FILES = ("env.json", "pytest.log", "junit.xml", "bench.json", "layers.json", "parts.log",
         "summary.md", "figures.json")


# --------------------------------------------------------------------------- running parts

def part_limit(name: str, pending: list[str], time_left: float) -> float:
    """Seconds for part ``name`` when ``pending`` (it included) share ``time_left`` seconds."""
    total = sum(WEIGHTS[p] for p in pending) or 1.0
    limit = max(1.0, time_left * WEIGHTS[name] / total)
    return min(limit, ENV_CAP) if name == "env" else limit


def run_part(cmd: list[str], limit: float, log: Path, env: dict, mode: str = "w",
             header: str = "") -> dict:
    """Run ``cmd`` in a new process group, output to ``log``; kill the group after ``limit`` s.

    Returns {"status": "ok" | "rc=N" | "timeout" | "error", "rc", "seconds", "limit", "cmd"}.
    """
    t = time.monotonic()
    info: dict[str, Any] = {"cmd": " ".join(cmd), "limit": round(limit, 1)}
    with open(log, mode, encoding="utf-8") as f:
        if header:
            f.write(header + "\n")
            f.flush()
        try:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                 start_new_session=True)
        except OSError as e:
            info.update(status="error", rc=None, seconds=0.0, error=str(e))
            return info
        try:
            rc = p.wait(timeout=limit)
            info.update(status="ok" if rc == 0 else f"rc={rc}", rc=rc)
        except subprocess.TimeoutExpired:
            _kill_group(p)
            info.update(status="timeout", rc=None)
            f.write(f"\n[check.py] killed after {limit:.0f} s (time limit)\n")
    info["seconds"] = round(time.monotonic() - t, 1)
    return info


def _kill_group(p: subprocess.Popen) -> None:
    """SIGTERM to the part's process group, SIGKILL 3 s later if anything is left."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def child_env() -> tuple[dict, list[str]]:
    """The subprocesses' environment: the working tree first on PYTHONPATH (and the .whl
    wheels when gast or tqdm is missing). Also returns notes on what was done."""
    notes = []
    paths = [str(ROOT)]
    missing = [m for m in ("gast", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        wheels = sorted(glob.glob(str(ROOT / ".whl" / "*.whl")))
        if wheels:
            target = tempfile.mkdtemp(prefix="knetc-wheels-")
            r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                                "--no-deps", "--target", target, *wheels],
                               capture_output=True, text=True, timeout=120)
            notes.append(f"{', '.join(missing)} missing: pip install --target {target} "
                         f"{len(wheels)} wheels: "
                         f"rc={r.returncode} {r.stderr.strip()[-300:]}")
            paths.append(target)
        else:
            notes.append(f"{', '.join(missing)} missing and no wheels in .whl/ (gast: knetc "
                         "will not import; tqdm: the examples will not)")
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    env["PYTHONUNBUFFERED"] = "1"         # logs up to the moment a part is killed
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # JAX is installed on the GPU machine; if anything imports it, it must not take 75% of the
    # device's memory up front (CuPy and torch share the GPU with it)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env, notes


# --------------------------------------------------------------------------- env (a subprocess)

def collect_env(path: str, dry: bool) -> None:
    """Write env.json, rewritten after each item so a hang still leaves what was found."""
    env: dict[str, Any] = {"dry_run": dry}

    def save():
        Path(path).write_text(json.dumps(env, indent=1, default=str), encoding="utf-8")

    def item(key, fn):
        try:
            env[key] = fn()
        except Exception as e:  # one failure never stops the rest
            env[key] = f"error: {type(e).__name__}: {str(e)[:300]}"
        save()

    item("python", lambda: sys.version.split()[0])
    item("platform", platform.platform)
    item("executable", lambda: sys.executable)
    for mod in ("numpy", "gast", "tqdm", "pytest", "hypothesis", "cupy", "torch"):
        item(f"{mod}_spec", lambda m=mod: "found" if importlib.util.find_spec(m) else "missing")
    item("numpy", lambda: __import__("numpy").__version__)
    item("knetc", lambda: (lambda k: f"{k.__version__} at {k.__file__}")(__import__("knetc")))
    if dry:
        for k in ("cupy", "torch", "cuda", "gpu", "nvidia_smi", "cudnn", "selftest_cudnn",
                  "selftest_cudnn_rnn", "selftest_graphs"):
            env[k] = "dry-run"
        for mod in ("knetc.runtime.cudnn", "knetc.runtime.cudnn.rnn", "knetc.graphs"):
            item(f"spec {mod}", lambda m=mod: _spec(m))
        save()
        return
    item("nvidia_smi", lambda: subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                              timeout=20).stdout.strip())
    item("cupy", _cupy_info)
    item("torch", _torch_info)
    item("cudnn", _cudnn_info)
    item("selftest_cudnn", lambda: _selftest("knetc.runtime.cudnn"))
    item("selftest_cudnn_rnn", lambda: _selftest("knetc.runtime.cudnn.rnn"))
    item("selftest_graphs", lambda: _selftest("knetc.graphs"))
    item("graph_step", lambda: "found" if hasattr(__import__("knetc"), "graph_step") else "missing")


def _spec(name: str) -> str:
    try:
        return "found" if importlib.util.find_spec(name) else "missing"
    except ImportError:
        return "missing"


def _cupy_info() -> dict:
    import cupy
    rt = cupy.cuda.runtime
    dev = cupy.cuda.Device()
    props = rt.getDeviceProperties(dev.id)
    name = props.get("name", b"?")
    return {"version": cupy.__version__, "runtime": rt.runtimeGetVersion(),
            "driver": rt.driverGetVersion(), "device": dev.id,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": dev.compute_capability,
            "memory_gib": round(rt.memGetInfo()[1] / 2 ** 30, 1),
            "available": bool(cupy.cuda.is_available())}


def _torch_info() -> dict:
    import torch
    out = {"version": torch.__version__, "cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
           "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name(0)
    return out


def _cudnn_info() -> dict:
    """knetc's cuDNN binding: where libcudnn was found, its version (or why not)."""
    if _spec("knetc.runtime.cudnn") != "found":
        return {"module": "missing"}
    import knetc.runtime.cudnn as kc
    out: dict[str, Any] = {"module": "found"}
    for key, fn in (("library", "find_library"), ("version", "version"), ("available", "available")):
        f = getattr(kc, fn, None)
        if f is None:
            out[key] = "missing"
            continue
        try:
            out[key] = f()
        except Exception as e:
            out[key] = f"error: {type(e).__name__}: {str(e)[:300]}"
    return out


def _selftest(module: str):
    """``module.selftest()``'s result, 'missing' when there is none, the error when it raises."""
    if _spec(module) != "found":
        return "missing"
    import importlib
    m = importlib.import_module(module)
    f = getattr(m, "selftest", None)
    if f is None:
        return "missing: no selftest()"
    t = time.monotonic()
    try:
        r = f()
    except Exception as e:
        return f"FAILED ({time.monotonic() - t:.1f} s): {type(e).__name__}: {str(e)[:500]}"
    text = r if isinstance(r, (dict, list, str, int, float, bool)) or r is None else repr(r)
    return {"returned": True, "seconds": round(time.monotonic() - t, 2), "result": text}


# --------------------------------------------------------------------------- reading results

LOG_LINE = re.compile(r"^(\S+::\S+).*?\s(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def parse_junit(path: Path) -> dict | None:
    """Counts and failure lines from a pytest junit file; None when missing or unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    c = {"tests": 0, "failed": 0, "errors": 0, "skipped": 0}
    for s in suites:
        c["tests"] += int(s.get("tests", 0))
        c["failed"] += int(s.get("failures", 0))
        c["errors"] += int(s.get("errors", 0))
        c["skipped"] += int(s.get("skipped", 0))
    c["passed"] = c["tests"] - c["failed"] - c["errors"] - c["skipped"]
    fails = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            e = case.find(kind)
            if e is not None:
                msg = (e.get("message") or "").strip().splitlines()
                where = f"{case.get('classname', '')}::{case.get('name', '')}"
                fails.append(f"{kind.upper()} {where} - {msg[0][:200] if msg else ''}")
    c["failures"] = fails
    c["source"] = "junit"
    return c


def parse_log(path: Path) -> dict:
    """Counts from pytest -v's per-test lines (used when junit.xml is missing: a killed run)."""
    c = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [],
         "source": "log"}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        c["source"] = "none"
        return c
    key = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "errors",
           "SKIPPED": "skipped", "XFAIL": "skipped"}
    seen = set()
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m and (m.group(1), m.group(2)) not in seen:
            seen.add((m.group(1), m.group(2)))
            c[key[m.group(2)]] += 1
            c["tests"] += 1
        if line.startswith(("FAILED ", "ERROR ")) and " - " in line:
            c["failures"].append(line[:250])
    return c


def tests_result(outdir: Path, dry: bool) -> dict:
    """The test counts: from junit.xml, else from the log; in a dry run the collected count."""
    log = outdir / "pytest.log"
    if dry:
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        m = re.search(r"(\d+)(?:/\d+)? tests? collected", text)
        n = int(m.group(1)) if m else 0
        return {"tests": n, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [],
                "source": "collect-only", "collected": n}
    j = parse_junit(outdir / "junit.xml")
    if j is not None:
        extra = parse_log(log)["failures"]
        j["failures"] = extra or j["failures"]      # -rfE's lines are the more readable ones
        return j
    return parse_log(log)


def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- the summary

def _f(v, nd=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


def env_lines(env: dict | None) -> list[str]:
    if not env:
        return ["env: missing"]
    cp, tc, cd = env.get("cupy"), env.get("torch"), env.get("cudnn")
    gpu = cp.get("name") if isinstance(cp, dict) else cp
    lines = [f"env: python {env.get('python')}, numpy {env.get('numpy')}, GPU {gpu}"]
    if isinstance(cp, dict):
        lines.append(f"env: cupy {cp.get('version')} (CUDA runtime {cp.get('runtime')}, driver "
                     f"{cp.get('driver')}, cc {cp.get('compute_capability')})")
    else:
        lines.append(f"env: cupy {cp}")
    if isinstance(tc, dict):
        lines.append(f"env: torch {tc.get('version')} (cuda {tc.get('cuda')}, cudnn {tc.get('cudnn')})")
    else:
        lines.append(f"env: torch {tc}")
    lines.append(f"env: knetc cudnn {json.dumps(cd, default=str)[:200]}")
    for k in ("selftest_cudnn", "selftest_cudnn_rnn", "selftest_graphs"):
        v = env.get(k)
        if isinstance(v, dict):
            v = f"returned ({v.get('seconds')} s) {json.dumps(v.get('result'), default=str)[:400]}"
        lines.append(f"env: {k}: {str(v)[:500]}")
    return lines


def bench_lines(bench: dict | None) -> list[str]:
    if not bench:
        return ["bench: no results"]
    out = [f"bench [{bench.get('status')}] ms/step knetc | graph | eager | compile | knetc/eager "
           f"| launches k/t | verify" + (f": {bench['error']}" if bench.get("error") else "")]
    for r in bench.get("rows", []):
        if r.get("error"):
            out.append(f"bench {r['model']}: ERROR {r['error'][:160]}")
            continue
        g = _f(r.get("graph_ms")) if r.get("graph_ms") is not None else "n/a"
        c = _f(r.get("compile_ms")) if r.get("compile_ms") is not None else "n/a"
        v = (f"{'ok' if r.get('verified') else 'MISMATCH'} {r['grad_err']:.1e}"
             if r.get("grad_err") is not None else r.get("verify_error", "-"))
        out.append(f"bench {r['model']}: {_f(r.get('knetc_ms'))} | {g} | {_f(r.get('torch_ms'))} | "
                   f"{c} | {_f(r.get('ratio'))}x | {_f(r.get('launches_knetc'))}/"
                   f"{_f(r.get('launches_torch'))} | {v}")
    errs = {r["model"]: r.get("graph_error") for r in bench.get("rows", []) if r.get("graph_error")}
    if errs:
        first = next(iter(errs.items()))
        out.append(f"bench graph_step n/a ({len(errs)} models), e.g. {first[0]}: {first[1][:160]}")
    return out


def layer_lines(layers: dict | None) -> list[str]:
    if not layers:
        return ["layers: no results"]
    out = [f"layers [{layers.get('status')}] fwd+bwd ms knetc/torch = ratio, err"
           + (f": {layers['error']}" if layers.get("error") else "")]
    for r in layers.get("rows", []):
        if r.get("error"):
            out.append(f"layers {r['layer']}: n/a {r['error'][:160]}")
        else:
            err = r.get("err")
            out.append(f"layers {r['layer']}: {_f(r.get('knetc_ms'))}/{_f(r.get('torch_ms'))} = "
                       f"{_f(r.get('ratio'))}x, err {err if err is None else f'{err:.1e}'}"
                       + (f" ({r['err_error'][:100]})" if r.get("err_error") else ""))
    return out


def write_summary(outdir: Path, fig: dict) -> str:
    """summary.md (full tables) and the compact text printed at the end (returned)."""
    t = fig["tests"]
    parts = fig["parts"]
    md = [f"# knetc GPU check ({'dry run' if fig['meta']['dry_run'] else 'GPU'})", "",
          f"budget {fig['meta']['budget']} s, elapsed {fig['meta']['elapsed']} s", "",
          "| part | status | seconds | limit |", "|---|---|---:|---:|"]
    for name, p in parts.items():
        md.append(f"| {name} | {p.get('status')} | {p.get('seconds', '-')} | {p.get('limit', '-')} |")
    md += ["", "| tests | passed | failed | errors | skipped | source |", "|---:|---:|---:|---:|---:|---|",
           f"| {t['tests']} | {t['passed']} | {t['failed']} | {t['errors']} | {t['skipped']} | "
           f"{t['source']} |", ""]
    if t["failures"]:
        md += ["## Failures", ""] + [f"- `{x}`" for x in t["failures"][:40]] + [""]
    for key, title in (("bench", "Training step (bench.py)"), ("layers", "Layers (layers.py)")):
        d = fig.get(key)
        md += [f"## {title}", ""]
        md += [d.get("markdown") or "(no table)" if d else "(no results)", ""]
    md += ["## Environment", "", "```", *env_lines(fig.get("env")), *fig["meta"]["notes"], "```", ""]
    (outdir / "summary.md").write_text("\n".join(md), encoding="utf-8")

    lines = [*env_lines(fig.get("env")), *fig["meta"]["notes"], *layer_lines(fig.get("layers"))]
    lines.append("parts: " + ", ".join(
        f"{n} {p.get('status')}" + (f" {p['seconds']}s/{p['limit']:.0f}s" if "seconds" in p else "")
        for n, p in parts.items()))
    lines.append(f"TESTS: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                 f"{t['skipped']} skipped of {t['tests']} ({t['source']})")
    lines += [f"  {x[:230]}" for x in t["failures"][:8]]
    if len(t["failures"]) > 8:
        lines.append(f"  ... {len(t['failures']) - 8} more in summary.md / pytest.log")
    lines += dlf_lines(fig.get("dlf"))
    lines += bench_lines(fig.get("bench"))
    return "\n".join(lines)


def dlf_lines(dlf: dict | None) -> list[str]:
    """One compact line per DeepLearningFrameworks model (dlf.py's own keys, numbers rounded)."""
    if not dlf:
        return []
    out = []
    for r in dlf.get("results", []):
        keys = [k for k in r if k not in ("model", "what", "dry_run")]
        out.append(f"dlf {r.get('model')}: " + ", ".join(f"{k}={_f(r[k])}" for k in keys)[:300])
    return out


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", nargs="?", default=None,
                   help="where the files go (default: $OUT, else ./gpu-check-out)")
    p.add_argument("--dry-run", action="store_true", help="no CUDA: check the layout only")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds for the whole run (default 420)")
    p.add_argument("--parts", default=",".join(PARTS),
                   help="comma-separated subset of tests,bench,layers (env always runs)")
    p.add_argument("--quick", action="store_true", help="fewer benchmark rounds")
    p.add_argument("--pytest-args", default="",
                   help="what pytest runs instead of 'tests/' (e.g. 'tests/gpu -k cudnn')")
    p.add_argument("--_env", default=None, help=argparse.SUPPRESS)   # internal: the env part
    args = p.parse_args(argv)
    args.part_list = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = sorted(set(args.part_list) - set(PARTS))
    if bad:
        p.error(f"unknown parts {bad}; choose from {', '.join(PARTS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._env:
        collect_env(args._env, args.dry_run)
        return 0
    t0 = time.monotonic()
    outdir = Path(args.outdir or os.environ.get("OUT") or "gpu-check-out").resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    dry = args.dry_run
    env, notes = child_env()
    py = sys.executable
    me = str(Path(__file__).resolve())
    todo = ["env"] + [p for p in PARTS if p in args.part_list]
    parts: dict[str, dict] = {}
    plog = outdir / "parts.log"
    plog.write_text("", encoding="utf-8")

    def left() -> float:
        return args.budget - (time.monotonic() - t0) - RESERVE

    for i, name in enumerate(todo):
        limit = part_limit(name, todo[i:], left())
        if left() < 2:
            parts[name] = {"status": "skipped: budget spent"}
            continue
        print(f"[check] {name}: limit {limit:.0f} s", flush=True)
        flags = ["--dry-run"] if dry else []
        if name == "env":
            cmd = [py, me, "--_env", str(outdir / "env.json"), *flags]
            info = run_part(cmd, limit, plog, env, "a", "===== env")
        elif name == "tests":
            if dry:
                cmd = [py, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "tests/gpu",
                       "-p", "no:cacheprovider", f"--junitxml={outdir / 'junit.xml'}"]
            else:
                target = shlex.split(args.pytest_args) or ["tests/"]
                cmd = [py, "-m", "pytest", "-v", "-rfE", "-m", "gpu", *target,
                       "-p", "no:cacheprovider", "--continue-on-collection-errors",
                       "--durations=15", f"--junitxml={outdir / 'junit.xml'}"]
            info = run_part(cmd, limit, outdir / "pytest.log", env)
        elif name == "dlf":
            DLF_JSON.unlink(missing_ok=True)
            cmd = [py, str(ROOT / "benchmarks" / "dlf.py"), "--json", str(DLF_JSON),
                   *(["--dry-run"] if dry else ["--device", "gpu", "--quick"])]
            info = run_part(cmd, limit, plog, env, "a", "===== dlf")
        else:
            script = HERE / f"{name}.py"
            cmd = [py, str(script), "--json", str(outdir / f"{name}.json"),
                   "--time-limit", f"{max(1.0, limit - 5):.0f}", *flags,
                   *(["--quick"] if args.quick else [])]
            info = run_part(cmd, limit, plog, env, "a", f"===== {name}")
        if dry and info["status"] == "ok":
            info["status"] = "dry-run"
        parts[name] = info
        print(f"[check] {name}: {info['status']} in {info.get('seconds')} s", flush=True)
    for name in PARTS:
        parts.setdefault(name, {"status": "not selected"})
    if not (outdir / "pytest.log").exists():
        (outdir / "pytest.log").write_text("(tests part not run)\n", encoding="utf-8")

    fig = {"meta": {"dry_run": dry, "budget": args.budget, "quick": args.quick,
                    "elapsed": round(time.monotonic() - t0, 1), "outdir": str(outdir),
                    "notes": notes, "files": list(FILES)},
           "parts": parts,
           "tests": tests_result(outdir, dry) if "tests" in args.part_list else
           {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [],
            "source": "not run"},
           "env": load_json(outdir / "env.json"),
           "bench": load_json(outdir / "bench.json"),
           "layers": load_json(outdir / "layers.json"),
           "dlf": load_json(DLF_JSON) if "dlf" in todo else None}
    text = write_summary(outdir, fig)
    fig["meta"]["elapsed"] = round(time.monotonic() - t0, 1)
    (outdir / "figures.json").write_text(json.dumps(fig, indent=1, default=str), encoding="utf-8")
    print(text, flush=True)
    ok_status = "dry-run" if dry else "ok"
    ran = [p for n, p in parts.items() if n in todo]
    ok = all(p.get("status") == ok_status for p in ran)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
