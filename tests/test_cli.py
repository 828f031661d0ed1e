"""Tests for the ``knetc`` command line (knetc/cli.py, python -m knetc)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import knetc
from knetc import api
from knetc.cli import eval_spec, main

MODEL = textwrap.dedent('''
    import sys
    import numpy as np
    import knetc

    def predict(w, x):
        h = knetc.relu(x @ w[0] + w[1])
        return h @ w[2] + w[3]

    def loss(w, x, y):
        return knetc.nll(predict(w, x), y)

    def l2(w, lam):
        return lam * sum(np.sum(wi * wi) for wi in w)

    def bad(w):
        w[0][0] = 1.0
        return np.sum(w[0])

    class Model:
        @staticmethod
        def energy(v):
            return np.sum(v * v)

    if __name__ == "__main__":
        print("MAIN BLOCK RAN", sys.argv[1:])
        n = int(sys.argv[sys.argv.index("--n") + 1]) if "--n" in sys.argv else 5
        rng = np.random.default_rng(0)
        w = [rng.standard_normal(s, dtype=np.float32) for s in [(20, 8), (8,), (8, 3), (3,)]]
        for batch in (n, 7):
            x = rng.standard_normal((batch, 20), dtype=np.float32)
            y = rng.integers(0, 3, batch)
            dw = knetc.grad(loss)(w, x, y)
        dw = knetc.grad(loss)(w, x, y)     # cached: no new adjoint
        knetc.grad(l2)(w, 0.1)
''')

W_SPEC = "[f32(20,8), f32(8), f32(8,3), f32(3)]"


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    return str(path)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _is_error_line(err: str) -> bool:
    """One ``knetc: error: ...`` line (after whatever the script printed), no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("knetc: error: ")]
    return len(lines) == 1 and len(lines[0]) > 20 and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# knetc show SCRIPT.py

def test_show_script_prints_every_adjoint(script, capsys):
    listeners = list(api._listeners)
    argv, path = sys.argv[:], sys.path[:]
    assert main(["show", script]) == 0
    out, err = capsys.readouterr()
    assert out.count("\ndef loss_grad(w, x, y):") == 2 and "def l2_grad(w, lam):" in out
    # one header comment line per adjoint, giving the function and the shapes
    headers = [ln for ln in out.splitlines() if ln.startswith("# ==== ")]
    assert len(headers) == 3
    assert headers[0].startswith("# ==== [1/3] loss_grad: gradient of loss (model.py:")
    assert "(5, 20) float32, (5,) int64" in headers[0]
    assert "(7, 20) float32, (7,) int64" in headers[1]
    assert "l2_grad" in headers[2] and "float)" in headers[2]
    # the user's source lines appear as comments, with the gradients' names
    assert "return knetc.nll(predict(w, x), y)" in out
    assert "# ∂ model.py:" in out
    for name in ("dw_0", "dw_1", "dw_2", "dw_3"):
        assert name in out
    compile(out, "<stdout>", "exec")          # the whole output is valid Python
    # the script's own prints went to stderr; process state is restored
    assert "MAIN BLOCK RAN" in err and "MAIN BLOCK RAN" not in out
    assert api._listeners == listeners and sys.argv == argv and sys.path == path


def test_script_arguments_after_double_dash(script, capsys):
    assert main(["show", script, "--", "--n", "4"]) == 0
    out, err = capsys.readouterr()
    assert "MAIN BLOCK RAN ['--n', '4']" in err
    assert "(4, 20) float32" in out and "(7, 20) float32" in out


def test_function_filter(script, capsys):
    assert main(["show", script, "--function", "l2"]) == 0
    out, _ = capsys.readouterr()
    assert "def l2_grad" in out and "def loss_grad" not in out
    assert out.startswith("# ==== [1/1] l2_grad")

    assert main(["show", script, "-f", "loss"]) == 0
    out, _ = capsys.readouterr()
    assert out.count("def loss_grad") == 2 and "def l2_grad" not in out


def test_function_filter_without_match(script, capsys):
    assert main(["show", script, "--function", "nope"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert _is_error_line(err) and "'nope'" in err and "loss_grad" in err and "l2_grad" in err


def test_output_directory(script, tmp_path, capsys):
    outdir = tmp_path / "gen" / "sub"
    assert main(["show", script, "-o", str(outdir)]) == 0
    out, _ = capsys.readouterr()
    written = out.split()
    names = sorted(os.path.basename(p) for p in written)
    assert names == ["l2_grad.py", "loss_grad.py", "loss_grad_1.py"]
    for p in written:
        text = open(p, encoding="utf-8").read()
        assert text.startswith("# ==== ") and "def " in text
        compile(text, p, "exec")
    assert "(7, 20) float32" in (outdir / "loss_grad_1.py").read_text()


# ---------------------------------------------------------------------------------------------
# knetc show MODULE_OR_FILE:FUNCTION --args SPEC

def test_file_function_form(script, capsys):
    spec = f"{W_SPEC}, f32(16,20), i64(16, high=3)"
    assert main(["show", f"{script}:loss", "--args", spec]) == 0
    out, err = capsys.readouterr()
    header = out.splitlines()[0]
    assert header.startswith("# ==== [1/1] loss_grad: gradient of loss")
    assert ("[(20, 8) float32, (8,) float32, (8, 3) float32, (3,) float32], (16, 20) float32, "
            "(16,) int64") in header
    assert "wrt w" in out and "dw_0" in out
    assert "MAIN BLOCK RAN" not in err + out          # the __main__ block does not run
    compile(out, "<stdout>", "exec")


def test_argnum(script, capsys):
    spec = f"{W_SPEC}, f32(16,20), i64(16, high=3)"
    assert main(["show", f"{script}:loss", "--args", spec, "--argnum", "1"]) == 0
    out, _ = capsys.readouterr()
    assert "wrt x" in out and "return dx" in out.replace("return (dx", "return dx")
    assert "dw_0" not in out


def test_module_name_form_and_dotted_function(tmp_path, monkeypatch, capsys):
    _write(tmp_path, "knetc_cli_testmod.py", MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "knetc_cli_testmod", raising=False)
    assert main(["show", "knetc_cli_testmod:Model.energy", "--args", "f64(3, 2)"]) == 0
    out, _ = capsys.readouterr()
    assert "def energy_grad(v):" in out and "(3, 2) float64" in out.splitlines()[0]
    monkeypatch.delitem(sys.modules, "knetc_cli_testmod", raising=False)


def test_function_form_output_directory(script, tmp_path, capsys):
    outdir = tmp_path / "out"
    assert main(["show", f"{script}:l2", "--args", "[f32(3), f32(2, 2)], 0.5",
                 "-o", str(outdir)]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == str(outdir / "l2_grad.py")
    text = (outdir / "l2_grad.py").read_text()
    compile(text, "l2_grad.py", "exec")
    assert "[(3,) float32, (2, 2) float32], float" in text


def test_eval_spec():
    args = eval_spec("[f32(2,3), f64((4,))], i64(5, high=3), zeros32(2), 7, 'x', {'a': ones64()}")
    (a, b), c, d, n, s, dct = args
    assert a.dtype == np.float32 and a.shape == (2, 3)
    assert b.dtype == np.float64 and b.shape == (4,)
    assert c.dtype == np.int64 and c.shape == (5,) and 0 <= c.min() and c.max() < 3
    assert d.dtype == np.float32 and not d.any()
    assert n == 7 and s == "x" and dct["a"].shape == () and dct["a"] == 1.0
    # a non-tuple result is the single argument; shapes may use integer arithmetic
    (x,) = eval_spec("f32(28*28, 2)")
    assert x.shape == (784, 2)
    (t,) = eval_spec("(f32(1), f32(2)),")
    assert isinstance(t, tuple) and len(t) == 2
    # reproducible (seed 0)
    assert np.array_equal(eval_spec("f32(3)")[0], eval_spec("f32(3)")[0])


# ---------------------------------------------------------------------------------------------
# errors: one clear line on stderr, exit status 2

@pytest.mark.parametrize("argv, needle", [
    (["show", "no_such_model.py"], "no such file"),
    (["show", "no_such_model.py:loss", "--args", "f32(3)"], "no such file"),
    (["show", "no_such_module_xyz:loss", "--args", "f32(3)"], "no module named"),
    (["show", "{script}:nope", "--args", "f32(3)"], "no function 'nope'"),
    (["show", "{script}:loss", "--args", "[f32(3)"], "invalid syntax"),
    (["show", "{script}:loss", "--args", "f32(3), float32(2)"], "unknown name 'float32'"),
    (["show", "{script}:loss", "--args", "__import__('os')"], "unknown name '__import__'"),
    (["show", "{script}:loss", "--args", "().__class__"], "not allowed"),
    (["show", "{script}:loss", "--args", "f32(-1)"], "non-negative"),
    (["show", "{script}:loss"], "--args"),
    (["show", "{script}:loss", "--args", "f32(3)", "--argnum", "5"], "argnums=5"),
    (["show", "{script}:loss", "--args", "f32(3), f32(3, 2), i64(3)"], "failed on --args"),
    (["show", "{script}:bad", "--args", "[f32(2, 2)],"], "w[0][0] = 1.0"),
])
def test_errors(script, capsys, argv, needle):
    argv = [a.replace("{script}", script) for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert _is_error_line(err), err
    assert needle.lower() in err.lower(), err


def test_knetc_error_while_running_script(tmp_path, capsys):
    path = _write(tmp_path, "mutates.py", """
        import numpy as np, knetc
        def bad(w):
            w[0] = 1.0
            return np.sum(w)
        knetc.grad(bad)(np.ones(3))
    """)
    assert main(["show", path]) == 2
    _, err = capsys.readouterr()
    assert _is_error_line(err) and "mutates.py" in err


def test_script_that_raises(tmp_path, capsys):
    path = _write(tmp_path, "boom.py", """
        def f():
            raise RuntimeError("kaboom")
        f()
    """)
    assert main(["show", path]) == 1
    _, err = capsys.readouterr()
    assert "RuntimeError: kaboom" in err and 'boom.py", line 3' in err
    assert "runpy" not in err and "cli.py" not in err
    assert err.rstrip().splitlines()[-1].startswith("knetc: error: ")


def test_script_exit_status_and_nothing_compiled(tmp_path, capsys):
    quiet = _write(tmp_path, "quiet.py", "x = 1\n")
    assert main(["show", quiet]) == 2
    _, err = capsys.readouterr()
    assert _is_error_line(err) and "compiled no adjoint" in err
    exits = _write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    assert main(["show", exits]) == 3
    assert "exited with status 3" in capsys.readouterr().err


def test_usage_errors(script, capsys):
    assert main(["show", script, "--argnum", "1"]) == 2
    assert _is_error_line(capsys.readouterr().err)
    assert main(["show"]) == 2                        # argparse: missing target
    assert "usage:" in capsys.readouterr().err
    assert main([]) == 2
    assert "show" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# --version, --help, python -m knetc

def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"knetc {knetc.__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: knetc" in out and "show" in out
    assert main(["show", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("SCRIPT.py", "MODULE_OR_FILE:FUNCTION", "--args SPEC", "--argnum", "--function",
                 "f32(*shape)", "i64(*shape, high=10", "zeros32", "Exit status"):
        assert text in out, text


def test_python_dash_m(script, tmp_path):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(knetc.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-m", "knetc", "show", script, "-f", "l2"],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("# ==== [1/1] l2_grad") and "def l2_grad(w, lam):" in run.stdout
    assert "MAIN BLOCK RAN" in run.stderr
    run = subprocess.run([sys.executable, "-m", "knetc", "show", "missing.py"],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert run.returncode == 2 and run.stderr.strip() == "knetc: error: no such file: 'missing.py'"


def test_show_compiles_specializations_that_would_run_at_tier_0(tmp_path, capsys):
    # Every call a new tree: outside `knetc show` most run uncompiled (tier 0); shown, all compile.
    path = _write(tmp_path, "trees.py", """
        import numpy as np, knetc

        def enc(w, t):
            return np.tanh(enc(w, t[0]) + enc(w, t[1])) if isinstance(t, tuple) else w[t]

        def loss(w, t):
            return np.sum(enc(w, t))

        w = np.ones((4, 2))
        for t in [(0, 1), ((0, 1), 2), (0, (1, 2)), ((0, 1), (2, 3)), (3, (2, (1, 0)))]:
            knetc.grad(loss)(w, t)
    """)
    before = knetc.settings.enabled("tier0")
    assert main(["show", path]) == 0
    out, _ = capsys.readouterr()
    assert out.count("\ndef loss_grad(w, t):") == 5
    assert knetc.settings.enabled("tier0") == before       # restored
