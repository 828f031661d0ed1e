"""Data for DyNet's four benchmarks: seeded synthetic sets with the real sets' statistics, and
loaders for the real files when they are present.

The real files are those of ``neulab/dynet-benchmark``'s ``data/`` folder, expected under
``$KNETC_DATA/dynet/`` in the same layout: ``text/{train,dev}.txt`` (Mikolov's PTB, one sentence
of space-separated words a line), ``tags/{train,dev}.txt`` (WikiNER, ``word|tag`` tokens) and
``trees/{train,dev}.txt`` (the Stanford Sentiment Treebank, one bracketed tree a line).

Every loader and generator returns the same encoded form, so the models never see strings:

* PTB (:class:`LMData`): sentences as lists of int word ids, each ending with ``<s>`` (DyNet
  appends it), vocabulary 10,001 (10,000 words and ``<s>``).
* WikiNER (:class:`TagData`): sentences as ``(word ids, tag ids)``; ids are ordered by frequency,
  so ids ``< ncommon`` are the words seen more than 5 times (DyNet's cut) and the others are rare:
  the plain tagger maps them to ``unk`` (= ``ncommon``), the char tagger spells them with
  ``spelling(id)``.
* SST (:class:`TreeData`): trees as nested tuples, a preterminal ``(label, word id)`` and an
  inner node ``(label, left, right)``; every node carries a 0–4 sentiment label.

The histograms below were counted on the real files (the PTB and WikiNER dev sets, the SST
training set); the synthetic sets draw lengths from them, words from Zipf laws and labels from
the real label frequencies.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

# ---- the real sets' statistics ---------------------------------------------------------
PTB_SENTENCES = 42_068
PTB_VOCAB = 10_001
# Sentence lengths (words + the final <s>) of PTB's dev set: PTB_LENGTHS[n] sentences of length n.
PTB_LENGTHS = (0, 0, 13, 18, 19, 39, 41, 46, 60, 78, 74, 119, 101, 113, 134, 124, 126, 116, 131,
               138, 123, 123, 127, 141, 128, 115, 116, 103, 94, 92, 95, 78, 76, 53, 35, 51, 44,
               42, 38, 31, 29, 27, 26, 12, 11, 14, 11, 5, 7, 7, 5, 2, 2, 1, 1, 1, 3, 1, 3, 1, 2,
               0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1)

WIKINER_SENTENCES = 142_153
WIKINER_COMMON = 20_792         # words seen more than 5 times in WikiNER's training set
WIKINER_TYPES = 300_000         # word types of the synthetic Zipf law
WIKINER_ZIPF = 1.17             # exponent giving ~20.8k words of expected count > 5
WIKINER_TAGS = ("O", "I-ORG", "I-PER", "I-LOC", "I-MISC")
WIKINER_TAG_FREQ = (32576, 1958, 1634, 1447, 1392)
# Sentence lengths of WikiNER's dev set, bucketed: (length, count) pairs.
WIKINER_LENGTHS = ((1, 2), (2, 21), (4, 5), (5, 9), (6, 18), (7, 17), (8, 47), (9, 50), (10, 46),
                   (11, 48), (12, 63), (13, 68), (14, 57), (15, 74), (16, 51), (17, 71), (18, 71),
                   (19, 62), (20, 78), (21, 65), (22, 47), (23, 60), (24, 54), (25, 64), (26, 50),
                   (27, 27), (28, 38), (29, 36), (30, 31), (31, 31), (32, 26), (33, 24), (34, 22),
                   (35, 26), (36, 14), (37, 17), (38, 14), (39, 16), (40, 17), (41, 14), (42, 16),
                   (43, 12), (44, 9), (45, 6), (46, 8), (47, 8), (48, 7), (49, 7), (50, 6),
                   (52, 10), (55, 12), (58, 10), (62, 9), (66, 6), (72, 4), (78, 6), (85, 3),
                   (100, 2), (144, 1))
# Word lengths in characters of WikiNER's dev tokens: WORD_LENGTHS[n] tokens of n characters.
WORD_LENGTHS = (0, 6001, 5569, 6569, 5068, 3795, 3309, 2984, 2167, 1403, 1014, 521, 341, 154, 57,
                22, 17, 6, 3, 0, 3, 2, 0, 1)
NCHARS = 100                    # characters of the synthetic alphabet (the real train set: ~150)

SST_TREES = 8_544
SST_VOCAB = 18_280              # distinct words in SST's training trees (+ _UNK_ = id 0)
SST_LABEL_FREQ = (8245, 34362, 219788, 44194, 11993)   # labels 0..4 over all nodes
# Leaf counts of SST's 8,544 training trees: SST_LEAVES[n] trees of n leaves.
SST_LEAVES = (0, 0, 40, 96, 152, 154, 231, 218, 228, 265, 298, 305, 308, 319, 334, 353, 334, 327,
              342, 351, 325, 312, 317, 296, 290, 259, 238, 223, 226, 171, 157, 158, 151, 124, 123,
              99, 69, 54, 61, 38, 31, 40, 24, 24, 20, 18, 11, 3, 8, 8, 4, 4, 3)


# ---- the encoded sets ------------------------------------------------------------------
@dataclass
class LMData:
    """PTB for the language model: ``sents`` (lists of int ids ending with ``eos``)."""
    sents: list
    nwords: int
    eos: int


@dataclass
class TagData:
    """WikiNER: ``sents`` as ``(word ids, tag ids)``; ids ``< ncommon`` are common words."""
    sents: list
    ncommon: int
    ntags: int
    nchars: int                          # character ids 0 .. nchars-1; 0 is the pad <*>
    spelling: Callable[[int], tuple] = field(repr=False)

    @property
    def unk(self) -> int:
        """The word id every rare word has in the plain tagger (rows of its embedding: unk+1)."""
        return self.ncommon


@dataclass
class TreeData:
    """SST: ``trees`` of ``(label, word)`` / ``(label, left, right)`` tuples."""
    trees: list
    nwords: int
    nlabels: int


def _hist_sampler(hist, rng, n):
    counts = np.asarray(hist, dtype=np.float64)
    return rng.choice(len(counts), size=n, p=counts / counts.sum())


def _zipf_probs(ntypes: int, s: float) -> np.ndarray:
    p = np.arange(1, ntypes + 1, dtype=np.float64) ** -s
    return p / p.sum()


def ptb(n: int = 2048, seed: int = 0, full: bool = False) -> LMData:
    """Synthetic PTB: ``n`` sentences (42,068 with ``full``), lengths from PTB's histogram,
    words from a Zipf law over 10,000 words; the id 10,000 is ``<s>``."""
    n = PTB_SENTENCES if full else n
    rng = np.random.default_rng([seed, 1])
    lengths = _hist_sampler(PTB_LENGTHS, rng, n)
    eos = PTB_VOCAB - 1
    words = rng.choice(eos, size=int(lengths.sum() - n), p=_zipf_probs(eos, 1.0))
    sents, k = [], 0
    for m in lengths:
        sents.append([int(i) for i in words[k:k + m - 1]] + [eos])
        k += m - 1
    return LMData(sents, PTB_VOCAB, eos)


def _spelling(seed: int) -> Callable[[int], tuple]:
    """A word id's spelling (character ids 1..NCHARS; 0 is the pad), the same for every call."""
    probs = np.asarray(WORD_LENGTHS, np.float64)
    probs /= probs.sum()
    cache: dict = {}

    def spell(word: int) -> tuple:
        if word not in cache:
            rng = np.random.default_rng([seed, 2, word])
            m = max(1, int(rng.choice(len(probs), p=probs)))
            cache[word] = tuple(int(c) for c in rng.integers(1, NCHARS + 1, m))
        return cache[word]
    return spell


def wikiner(n: int = 2048, seed: int = 0, full: bool = False) -> TagData:
    """Synthetic WikiNER: ``n`` sentences (142,153 with ``full``), lengths from the dev set's
    histogram, words from a Zipf law (exponent 1.17 over 300k types, so that ~20.8k words have
    an expected count above 5 in the full set, as in the real one: those are the common words,
    whatever ``n`` is), tags from the real tag frequencies, rare words spelled by characters."""
    n = WIKINER_SENTENCES if full else n
    rng = np.random.default_rng([seed, 3])
    lens, counts = zip(*WIKINER_LENGTHS)
    lengths = np.asarray(lens)[_hist_sampler(counts, rng, n)]
    total = int(lengths.sum())
    words = rng.choice(WIKINER_TYPES, size=total, p=_zipf_probs(WIKINER_TYPES, WIKINER_ZIPF))
    tags = _hist_sampler(WIKINER_TAG_FREQ, rng, total)
    sents, k = [], 0
    for m in lengths:
        sents.append(([int(i) for i in words[k:k + m]], [int(t) for t in tags[k:k + m]]))
        k += m
    return TagData(sents, WIKINER_COMMON, len(WIKINER_TAGS), NCHARS + 1, _spelling(seed))


def _random_tree(rng, words, labels):
    nodes = [(lab, w) for lab, w in zip(labels[:len(words)], words)]
    inner = iter(labels[len(words):])
    while len(nodes) > 1:
        i = int(rng.integers(0, len(nodes) - 1))
        nodes[i:i + 2] = [(next(inner), nodes[i], nodes[i + 1])]
    return nodes[0]


def sst(n: int = 512, seed: int = 0, full: bool = False) -> TreeData:
    """Synthetic SST: ``n`` binary trees (8,544 with ``full``), leaf counts from SST's training
    histogram, random bracketings, words from a Zipf law over SST's 18,280 words (id 0 is
    ``_UNK_``), every node labelled from the real label frequencies."""
    n = SST_TREES if full else n
    rng = np.random.default_rng([seed, 4])
    leaves = _hist_sampler(SST_LEAVES, rng, n)
    p = _zipf_probs(SST_VOCAB, 1.0)
    trees = []
    for m in leaves:
        words = [int(w) + 1 for w in rng.choice(SST_VOCAB, size=m, p=p)]
        labels = [int(x) for x in _hist_sampler(SST_LABEL_FREQ, rng, 2 * m - 1)]
        trees.append(_random_tree(rng, words, labels))
    return TreeData(trees, SST_VOCAB + 1, 5)


# ---- loaders for the real files --------------------------------------------------------
def data_dir() -> Optional[str]:
    """``$KNETC_DATA/dynet`` when it exists, else None."""
    root = os.environ.get("KNETC_DATA")
    path = os.path.join(root, "dynet") if root else None
    return path if path and os.path.isdir(path) else None


def _path(sub: str, split: str, root: Optional[str]) -> str:
    root = root or data_dir()
    if root is None:
        raise FileNotFoundError("the DyNet benchmark data is not there: set KNETC_DATA to a folder "
                                "holding dynet/{text,tags,trees}/{train,dev}.txt")
    return os.path.join(root, sub, f"{split}.txt")


def load_ptb(split: str = "train", root: Optional[str] = None,
             w2i: Optional[dict] = None) -> tuple[LMData, dict]:
    """Read ``text/<split>.txt`` as DyNet does (each line's words, then ``<s>``); ``w2i`` grows
    as new words appear (pass the training set's to read dev with the same ids)."""
    w2i = {} if w2i is None else w2i
    sents = []
    with open(_path("text", split, root), encoding="utf-8") as fh:
        for line in fh:
            sent = [w2i.setdefault(x, len(w2i)) for x in line.split()]
            sents.append(sent + [w2i.setdefault("<s>", len(w2i))])
    return LMData(sents, len(w2i), w2i["<s>"]), w2i


def _read_tags(path):
    with open(path, encoding="utf-8") as fh:
        return [[tuple(x.rsplit("|", 1)) for x in line.split()] for line in fh if line.strip()]


def load_wikiner(split: str = "train", root: Optional[str] = None,
                 vocab: Optional[tuple] = None) -> tuple[TagData, tuple]:
    """Read ``tags/<split>.txt``; the vocabularies (words by frequency, tags, characters) come
    from the training file, or from ``vocab`` (what a previous call returned)."""
    if vocab is None:
        train = _read_tags(_path("tags", "train", root))
        wc = Counter(w for s in train for w, _ in s)
        words = [w for w, _ in sorted(wc.items(), key=lambda kv: -kv[1])]
        ncommon = sum(1 for w in words if wc[w] > 5)
        tags = sorted({t for s in train for _, t in s})
        chars = sorted({c for w in wc for c in w})
        vocab = ({w: i for i, w in enumerate(words)}, ncommon, {t: i for i, t in enumerate(tags)},
                 {c: i + 1 for i, c in enumerate(chars)})   # 0: the pad
    w2i, ncommon, t2i, c2i = vocab
    sents, rare = [], {}
    cunk = len(c2i) + 1
    for s in _read_tags(_path("tags", split, root)):
        ids = []
        for w, _ in s:
            i = w2i.get(w)
            if i is None:   # unseen in training: a rare word of its own
                i = rare.setdefault(w, len(w2i) + len(rare))
            ids.append(i)
        sents.append((ids, [t2i[t] for _, t in s]))
    spellings = {i: w for w, i in w2i.items()} | {i: w for w, i in rare.items()}

    def spell(word: int) -> tuple:
        return tuple(c2i.get(c, cunk) for c in spellings[word])
    return TagData(sents, ncommon, len(t2i), len(c2i) + 2, spell), vocab


_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def parse_tree(line: str, w2i: dict, grow: bool):
    """One bracketed SST line as ``(label, word id)`` / ``(label, left, right)`` tuples."""
    toks = _TOKEN.findall(line)
    pos = 0

    def node():
        nonlocal pos
        if toks[pos] != "(":
            raise ValueError(f"expected '(' at token {pos} of {line[:60]!r}")
        label = int(toks[pos + 1])
        pos += 2
        if toks[pos] != "(":           # a preterminal: (label word)
            word = toks[pos]
            wid = w2i.setdefault(word, len(w2i)) if grow else w2i.get(word, 0)
            if toks[pos + 1] != ")":
                raise ValueError(f"a leaf with more than one word in {line[:60]!r}")
            pos += 2
            return (label, wid)
        left = node()
        right = node()
        if toks[pos] != ")":
            raise ValueError(f"a node with more than two children in {line[:60]!r}")
        pos += 1
        return (label, left, right)
    return node()


def load_sst(split: str = "train", root: Optional[str] = None,
             w2i: Optional[dict] = None) -> tuple[TreeData, dict]:
    """Read ``trees/<split>.txt``: word ids from ``w2i`` (grown on the training set, where
    ``_UNK_`` is id 0; unknown words of other splits map to 0)."""
    grow = w2i is None
    w2i = {"_UNK_": 0} if w2i is None else w2i
    with open(_path("trees", split, root), encoding="utf-8") as fh:
        trees = [parse_tree(line, w2i, grow) for line in fh if line.strip()]
    return TreeData(trees, len(w2i), 5), w2i


def leaves(tree) -> int:
    """Number of leaves (words) of an SST tree."""
    return 1 if len(tree) == 2 else leaves(tree[1]) + leaves(tree[2])
