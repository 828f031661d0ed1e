"""DyNet's four benchmark models (examples/dynet): gradients against central differences in
float64 at tiny sizes, the synthetic data's determinism and statistics, the loaders on small
files in the real formats, and benchmarks/dynet.py in its dry-run mode."""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

import knetc
from examples.dynet import data as D
from examples.dynet import rnnlm, tagger, tagger_char, treenn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _f64(w):
    return {k: v.astype(np.float64) for k, v in w.items()}


def _check_grad(loss, w, args, keys, n=6, eps=1e-6, seed=0):
    """knetc's gradient of ``loss`` against central differences at ``n`` random entries of
    each parameter in ``keys`` (float64), and its loss against the function's own value."""
    g, lval = knetc.gradloss(loss)(w, *args)
    assert np.isclose(float(lval), float(loss(w, *args)), rtol=1e-12)
    rng = np.random.default_rng(seed)
    for k in keys:
        assert g[k] is not None and g[k].shape == w[k].shape and g[k].dtype == np.float64, k
        nz = np.flatnonzero(g[k])
        picks = rng.choice(nz, size=min(n, nz.size), replace=False) if nz.size else []
        for i in list(picks) + [int(rng.integers(w[k].size))]:
            wp, wm = copy.deepcopy(w), copy.deepcopy(w)
            wp[k].flat[i] += eps
            wm[k].flat[i] -= eps
            num = (float(loss(wp, *args)) - float(loss(wm, *args))) / (2 * eps)
            assert abs(g[k].flat[i] - num) <= 1e-6 + 1e-5 * abs(num), (k, i, g[k].flat[i], num)


def test_rnnlm_gradient():
    lm = D.LMData([[1, 2, 3, 9], [4, 5, 9], [6, 9]], 10, 9)
    r, w = rnnlm.init(10, 4, 5, seed=1)
    w = _f64(w)
    r = knetc.RNN("lstm", 4, 5, dtype=np.float64)
    x, y, mask = rnnlm.batches(lm, 3)[0]
    assert x.shape == (4, 3) and mask.sum() == 9 and (x[0] == 9).all()
    _check_grad(rnnlm.loss, w, (r, x, y, mask), ["E", "rnn", "W", "b"])


def test_tagger_gradient():
    r, w = tagger.init(12, 3, embed=4, hidden=3, mlp=5, seed=2)
    w = _f64(w)
    r = knetc.RNN("lstm", 4, 3, bidirectional=True, dtype=np.float64)
    tags = D.TagData([([1, 5, 30, 2], [0, 2, 1, 0])], 11, 3, 8, lambda i: (1, 2))
    words, gold = tagger.encode(tags.sents[0], tags)
    assert words == [1, 5, 11, 2] and all(type(i) is int for i in words)
    _check_grad(tagger.loss, w, (r, words, gold), ["E", "rnn", "H", "O"])


def test_tagger_char_gradient():
    _, w = tagger_char.init(12, 3, 8, cembed=3, embed=4, hidden=3, mlp=5, seed=3)
    w = _f64(w)
    specs = (knetc.RNN("lstm", 4, 3, bidirectional=True, dtype=np.float64),
             knetc.RNN("lstm", 3, 2, bidirectional=True, dtype=np.float64))
    tags = D.TagData([([1, 40, 3, 41], [0, 2, 1, 0])], 12, 3, 8,
                     lambda i: (1, 2, 3) if i == 40 else (4, 5))
    words, gold = tagger_char.encode(tags.sents[0], tags)
    assert words == [1, (0, 1, 2, 3, 0), 3, (0, 4, 5, 0)]
    _check_grad(tagger_char.loss, w, (specs, words, gold), ["E", "C", "rnn", "crnn", "H", "O"])


def test_treenn_gradient():
    w = _f64(treenn.init(7, 5, embed=3, hidden=4, seed=4))
    tree = (1, (2, (0, 3), (4, 5)), (3, 6))
    _check_grad(treenn.loss, w, (tree,), list(w))


# ---- data -------------------------------------------------------------------------------
def test_generators_are_deterministic():
    assert D.ptb(50, seed=3).sents == D.ptb(50, seed=3).sents
    assert D.ptb(50, seed=3).sents != D.ptb(50, seed=4).sents
    a, b = D.wikiner(40, seed=1), D.wikiner(40, seed=1)
    assert a.sents == b.sents
    rare = [i for s in a.sents for i in s[0] if i >= a.ncommon]
    assert rare and [a.spelling(i) for i in rare] == [b.spelling(i) for i in rare]
    assert D.sst(30, seed=2).trees == D.sst(30, seed=2).trees


def test_ptb_statistics():
    lm = D.ptb(3000, seed=0)
    assert lm.nwords == 10_001 and all(s[-1] == lm.eos for s in lm.sents)
    assert max(max(s) for s in lm.sents) == lm.eos and min(min(s) for s in lm.sents) >= 0
    lengths = np.array([len(s) for s in lm.sents])
    ref = np.asarray(D.PTB_LENGTHS, float)
    mean = (ref * np.arange(len(ref))).sum() / ref.sum()
    assert abs(lengths.mean() - mean) < 0.5 and lengths.max() <= len(ref) - 1
    assert sum(D.PTB_LENGTHS) == 3370          # the dev set the histogram was counted on


def test_wikiner_statistics():
    tags = D.wikiner(2000, seed=0)
    words = np.array([i for s in tags.sents for i in s[0]])
    tag = np.array([t for s in tags.sents for t in s[1]])
    assert abs(np.mean([len(s[0]) for s in tags.sents]) - 23.0) < 1.0
    assert abs((tag == 0).mean() - 32576 / 39007) < 0.01            # mostly O
    # Zipf: the commonest word is about 1/rank^1.17 more frequent than the others.
    counts = np.bincount(words, minlength=10)
    assert counts[0] > counts[1] > counts[9] and abs(counts[0] / counts[9] - 10 ** 1.17) < 6
    # The full set's expected counts put ~20.8k words above 5 occurrences, as in WikiNER.
    p = D._zipf_probs(D.WIKINER_TYPES, D.WIKINER_ZIPF)
    common = int((p * D.WIKINER_SENTENCES * 23.0 > 5).sum())
    assert abs(common - D.WIKINER_COMMON) / D.WIKINER_COMMON < 0.02
    rare_share = (words >= tags.ncommon).mean()
    assert 0.02 < rare_share < 0.2
    spell = [tags.spelling(int(i)) for i in words[words >= tags.ncommon][:200]]
    assert all(1 <= len(s) <= 23 and all(1 <= c <= D.NCHARS for c in s) for s in spell)
    assert D.wikiner(1, full=False).ncommon == 20_792


def test_sst_statistics():
    sst = D.sst(1000, seed=0)
    assert sst.nwords == 18_281 and sst.nlabels == 5
    nleaves = np.array([D.leaves(t) for t in sst.trees])
    ref = np.asarray(D.SST_LEAVES, float)
    assert sum(D.SST_LEAVES) == D.SST_TREES
    assert abs(nleaves.mean() - (ref * np.arange(len(ref))).sum() / ref.sum()) < 1.0

    def labels(t):
        return [t[0]] + ([] if len(t) == 2 else labels(t[1]) + labels(t[2]))
    lab = np.array([x for t in sst.trees for x in labels(t)])
    assert lab.size == (2 * nleaves - 1).sum()
    assert abs((lab == 2).mean() - 219788 / 318582) < 0.02


def test_full_sizes_are_the_real_ones():
    assert len(D.sst(full=True).trees) == 8_544
    assert len(D.ptb(full=True).sents) == 42_068


# ---- loaders on small files in the real formats -----------------------------------------
@pytest.fixture
def dynet_dir(tmp_path, monkeypatch):
    root = tmp_path / "dynet"
    (root / "text").mkdir(parents=True)
    (root / "tags").mkdir()
    (root / "trees").mkdir()
    (root / "text" / "train.txt").write_text(" the cat sat \n a cat <unk> ran \n")
    (root / "text" / "dev.txt").write_text(" the dog sat \n")
    common = " ".join("Paris|I-LOC the|O" for _ in range(6))
    (root / "tags" / "train.txt").write_text(common + " Zog|I-PER .|O\n")
    (root / "tags" / "dev.txt").write_text("the|O Zoë|I-PER Paris|I-LOC\n")
    (root / "trees" / "train.txt").write_text(
        "(3 (2 (2 The) (2 Rock)) (4 (3 is) (4 great)))\n(1 (1 bad) (2 .))\n")
    (root / "trees" / "dev.txt").write_text("(2 (2 The) (0 dreadful))\n")
    monkeypatch.setenv("KNETC_DATA", str(tmp_path))
    return root


def test_load_ptb(dynet_dir):
    lm, w2i = D.load_ptb("train")
    assert lm.sents == [[0, 1, 2, 3], [4, 1, 5, 6, 3]] and lm.eos == 3 == w2i["<s>"]
    dev, w2i = D.load_ptb("dev", w2i=w2i)
    assert dev.sents == [[0, 7, 2, 3]] and dev.nwords == 8


def test_load_wikiner(dynet_dir):
    tags, vocab = D.load_wikiner("train")
    w2i, ncommon, t2i, c2i = vocab
    assert ncommon == 2 and {w2i["Paris"], w2i["the"]} == {0, 1}
    assert tags.sents[0][1][:2] == [t2i["I-LOC"], t2i["O"]] and tags.ntags == 3
    zog = w2i["Zog"]
    assert zog >= ncommon and tags.spelling(zog) == tuple(c2i[c] for c in "Zog")
    dev, _ = D.load_wikiner("dev", vocab=vocab)
    words = dev.sents[0][0]
    assert words[0] == w2i["the"] and words[2] == w2i["Paris"] and words[1] >= len(w2i)
    cunk = len(c2i) + 1
    assert dev.spelling(words[1]) == (c2i["Z"], c2i["o"], cunk) and dev.nchars == cunk + 1
    enc, _ = tagger_char.encode(dev.sents[0], dev)
    assert enc[0] == w2i["the"] and enc[1] == (0, c2i["Z"], c2i["o"], cunk, 0)


def test_load_sst(dynet_dir):
    sst, w2i = D.load_sst("train")
    assert w2i["_UNK_"] == 0 and sst.nwords == 7
    t = sst.trees[0]
    assert t == (3, (2, (2, w2i["The"]), (2, w2i["Rock"])), (4, (3, w2i["is"]), (4, w2i["great"])))
    dev, _ = D.load_sst("dev", w2i=w2i)
    assert dev.trees == [(2, (2, w2i["The"]), (0, 0))]
    with pytest.raises(ValueError):
        D.parse_tree("(2 (2 a) (2 b) (2 c))", {}, True)


def test_loader_without_data(monkeypatch, tmp_path):
    monkeypatch.setenv("KNETC_DATA", str(tmp_path))
    assert D.data_dir() is None
    with pytest.raises(FileNotFoundError, match="KNETC_DATA"):
        D.load_sst()


# ---- the benchmark script ---------------------------------------------------------------
def test_benchmark_dry_run(tmp_path):
    out = tmp_path / "r.json"
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "dynet.py"),
                          "--dry-run", "--json", str(out)], capture_output=True, text=True,
                         timeout=240, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    import json
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["rnnlm", "tagger", "tagger_char", "treenn"]
    for r in rows:
        assert r["rate"]["knetc"] > 0 and r["first"]["knetc"]["first_step_s"] > 0
        assert r["again"]["knetc"] > 0       # the first chunk's second pass
        assert r["first_grad_s"]["knetc"] > 0
        # knetc's very first gradient by compiler stage: a first call specializes, and its
        # stages together take no longer than the gradient did
        stages = r["first_grad_stages_s"]
        assert stages["specialize"] > 0 and set(stages) <= {
            "parse", "rules", "specialize", "adjoint", "compile", "tier 0"}
        assert sum(stages.values()) <= r["first_grad_s"]["knetc"]
        assert set(r["cache"]) == {"hits", "misses", "entries", "tier0"}
        for peer, err in r["verify"].items():
            assert err["loss"] <= 1e-5 and err["grad"] <= 1e-4, (r["model"], peer)
    assert "treenn" in res.stdout and "sentences/s" in res.stdout
    assert "very first gradient in this process" in res.stdout


def test_benchmark_epochs_mode():
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "dynet.py"),
                          "--models", "treenn", "--epochs", "2", "--examples", "5",
                          "--no-autograd"], capture_output=True, text=True, timeout=240,
                         env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    line = [s for s in res.stdout.splitlines() if s.startswith("treenn, 5 examples")][0]
    knetc_ms = line.split("knetc ")[1].split(";")[0].split(" / ")
    assert len(knetc_ms) == 2 and all(float(x) > 0 for x in knetc_ms)
