"""A character-level LSTM language model on Shakespeare: Knet's ``charlm`` tutorial, the knetc way.

Knet.jl::

    function predict(ws,xs,hx,cx)
        r,wr,wx,wy,by = ws
        x = wx[:,xs]                                     # xs=(B,T) x=(X,B,T)
        y,hy,cy = rnnforw(r,wr,x,hx,cx,hy=true,cy=true)  # y=(H,B,T) hy=cy=(H,B,L)
        y2 = reshape(y,size(y,1),size(y,2)*size(y,3))    # y2=(H,B*T)
        return wy*y2.+by, hy, cy
    end
    function loss(w,x,y,h)
        py,hy,cy = predict(w,x,h...)
        h[1],h[2] = getval(hy),getval(cy)
        return nll(py,y)
    end

with an embedding of 168, one LSTM layer of 334 hidden units, Adam and gradient clipping.  The
final hidden and cell states of each minibatch are stored into the list ``h`` inside the loss
(cut off from the gradient with ``getval``) and start the next minibatch: the text is cut into
``batchsize`` parallel streams, and consecutive minibatches continue each stream, so the state is
carried across minibatches (truncated back-propagation through time) and reset every epoch.

knetc's shapes are Knet's reversed, time first: ``xs`` is (T, B) character ids, the embedding
``wx`` is (V, 168), the RNN input ``wx[xs]`` is (T, B, 168), ``y`` (T, B, 334), the output layer
``wy`` (334, V) and ``by`` (V,); the scores (T*B, V) are compared with the next characters
(T*B,) in the same order.

Knet's tutorial trains with batch 256, sequences of 100 characters, for several epochs over all of
Shakespeare (a GPU job).  On a CPU the default here is scaled down (batch 32, sequences of 50,
``--batches`` minibatches per epoch, lr 0.003) so that the loss visibly falls in a minute or two;
``--full`` restores the tutorial's settings.  After training, ``--sample`` characters are generated.

    python -m examples.charlm                    # scaled-down CPU run
    python -m examples.charlm --epochs 3 --batches 300
    python -m examples.charlm --full             # batch 256, seq 100, whole epochs, lr 0.001
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import knetc
from knetc import init
from knetc.data import shakespeare, tinyshakespeare
from knetc.optim import Adam, optimizers, update
from knetc.progress import progress
from knetc.runtime.rnn import rnnforw, rnninit


# --------------------------------------------------------------------------- the model

def predict(ws, xs, hx=None, cx=None):
    """Scores (T*B, V) for the next character after each of xs (T, B); also the final states."""
    r, wr, wx, wy, by = ws
    x = wx[xs]                                   # (T, B, E)
    y, hy, cy = rnnforw(r, wr, x, hx, cx)        # y (T, B, H), hy = cy (1, B, H)
    y2 = y.reshape(-1, y.shape[2])               # (T*B, H)
    return y2 @ wy + by, hy, cy


def loss(w, x, y, h):
    """Average nll of the next characters y (T*B,); stores the final RNN state into h."""
    py, hy, cy = predict(w, x, h[0], h[1])
    h[0], h[1] = knetc.getval(hy), knetc.getval(cy)
    return knetc.nll(py, y)


def initmodel(vocab, embed=168, hidden=334, seed=None):
    """``[r, wr, wx, wy, by]`` as in Knet: the RNN spec, its flat weights, the embedding, the
    output layer. r is a Python value (no gradient); the rest are float32 arrays."""
    r, wr = rnninit(embed, hidden, rnnType="lstm", seed=seed)
    return [r, wr, init.xavier(vocab, embed), init.xavier(hidden, vocab),
            np.zeros(vocab, np.float32)]


# --------------------------------------------------------------------------- data

def vocabulary(text):
    """(chars, ids): the sorted distinct characters of text and text as int64 ids into them."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    codes, ids = np.unique(codes, return_inverse=True)
    return "".join(map(chr, codes)), ids.astype(np.int64)


def streams(ids, batchsize):
    """ids cut into ``batchsize`` contiguous streams, one per column: (len(ids)//batchsize, B)."""
    n = len(ids) // batchsize
    return np.ascontiguousarray(ids[:n * batchsize].reshape(batchsize, n).T)


def sequences(data, seqlength, limit=0):
    """The minibatches ``(x (T, B), y (T*B,))`` of a stream array ``data`` (n, B) in order: y is x
    shifted by one character. Consecutive minibatches continue the same streams."""
    nseq = (len(data) - 1) // seqlength
    if limit:
        nseq = min(nseq, limit)
    for k in range(nseq):
        i = k * seqlength
        yield data[i:i + seqlength], data[i + 1:i + seqlength + 1].reshape(-1)


def avgloss(model, data, seqlength, limit=0):
    """Average per-character nll over the minibatches of ``data``, carrying the state."""
    h = [None, None]
    total = n = 0
    for x, y in sequences(data, seqlength, limit):
        total += float(loss(model, x, y, h)) * len(y)
        n += len(y)
    return total / max(n, 1)


def generate(model, chars, n, start="\n", temperature=1.0, rng=None):
    """Sample n characters from the model, starting after the text ``start``."""
    rng = rng or init.default_rng()
    index = {c: i for i, c in enumerate(chars)}
    h = c = None
    out = []
    prefix = [index[ch] for ch in start if ch in index] or [0]
    xs = np.array(prefix, dtype=np.int64)[:, None]          # (T, 1)
    for _ in range(n):
        py, h, c = predict(model, xs, h, c)
        p = knetc.softmax(py[-1].astype(np.float64) / temperature)
        k = int(rng.choice(len(chars), p=p / p.sum()))
        out.append(chars[k])
        xs = np.array([[k]], dtype=np.int64)
    return "".join(out)


# --------------------------------------------------------------------------- training

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.charlm",
                                description="Character-level LSTM language model (Knet tutorial).")
    p.add_argument("--data", default="shakespeare", choices=["shakespeare", "tinyshakespeare"],
                   help="text to train on (shakespeare: the complete works, as Knet)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (1)")
    p.add_argument("--batches", type=int, default=None,
                   help="minibatches per epoch (CPU default 150; 0: the whole text)")
    p.add_argument("--batchsize", type=int, default=None, help="parallel streams (32; --full 256)")
    p.add_argument("--seqlength", type=int, default=None,
                   help="characters per minibatch and stream (50; --full 100)")
    p.add_argument("--embed", type=int, default=None, help="embedding size (168; --small 64)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM hidden size (334; --small 128)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (0.003; --full 0.001)")
    p.add_argument("--gclip", type=float, default=3.0, help="gradient clip, per array (3.0)")
    p.add_argument("--test", type=float, default=0.05,
                   help="fraction of the text (its end) held out for testing (0.05)")
    p.add_argument("--testbatches", type=int, default=None,
                   help="minibatches of held-out text to measure (20; 0: all)")
    p.add_argument("--sample", type=int, default=300, help="characters to generate at the end")
    p.add_argument("--every", type=int, default=None,
                   help="print the running loss every this many minibatches (batches/10)")
    p.add_argument("--full", action="store_true",
                   help="the tutorial's settings: batch 256, sequences of 100, lr 0.001, whole "
                        "epochs (hours on a CPU)")
    p.add_argument("--small", action="store_true",
                   help="quick run: embed 64, hidden 128, batch 16 x seq 32, 40 minibatches")
    p.add_argument("--seed", type=int, default=1, help="random seed (-1: none)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    args = p.parse_args(argv)
    model = dict(embed=168, hidden=334)
    if args.full:
        defaults = dict(epochs=1, batches=0, batchsize=256, seqlength=100, lr=0.001, testbatches=0)
    elif args.small:
        defaults = dict(epochs=1, batches=40, batchsize=16, seqlength=32, lr=0.01, testbatches=10)
        model = dict(embed=64, hidden=128)
    else:
        defaults = dict(epochs=1, batches=150, batchsize=32, seqlength=50, lr=0.003, testbatches=20)
    defaults.update(model)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv=None):
    args = parse_args(argv)
    seed = args.seed if args.seed >= 0 else None
    if seed is not None:
        init.seed(seed)
    t0 = time.perf_counter()
    text = shakespeare(raw=True) if args.data == "shakespeare" else tinyshakespeare()
    chars, ids = vocabulary(text)
    ntst = int(len(ids) * args.test)
    trn = streams(ids[:len(ids) - ntst], args.batchsize)
    tst = streams(ids[len(ids) - ntst:], args.batchsize) if ntst else None
    model = initmodel(len(chars), args.embed, args.hidden, seed)
    opts = optimizers(model, Adam, lr=args.lr, gclip=args.gclip)
    lossgradient = knetc.gradloss(loss)
    nbatches = (len(trn) - 1) // args.seqlength
    if args.batches:
        nbatches = min(nbatches, args.batches)
    every = args.every or max(nbatches // 10, 1)
    print(f"charlm: {args.data} ({len(text)} chars, vocabulary {len(chars)}), LSTM embed "
          f"{args.embed} hidden {args.hidden}; batch {args.batchsize} x seq {args.seqlength}, "
          f"{nbatches} minibatches/epoch, {args.epochs} epochs, Adam lr {args.lr} gclip "
          f"{args.gclip}", flush=True)

    def tstloss():
        return avgloss(model, tst, args.seqlength, args.testbatches) if tst is not None else None

    history = []
    tl = tstloss()
    history.append({"epoch": 0, "tst_loss": tl})
    if not args.quiet and tl is not None:
        print(f"epoch   0  tst loss {tl:.4f}", flush=True)
    steps = []          # (minibatch, loss) of every minibatch
    ttrain = 0.0
    for epoch in range(1, args.epochs + 1):
        h = [None, None]                 # a fresh state for each epoch
        start = time.perf_counter()
        run = nrun = 0.0
        bar = progress(sequences(trn, args.seqlength, nbatches), total=nbatches,
                       desc=f"epoch {epoch}")
        for b, (x, y) in enumerate(bar, 1):
            dw, lossval = lossgradient(model, x, y, h)
            update(model, dw, opts)
            lossval = float(lossval)
            steps.append(lossval)
            run += lossval
            nrun += 1
            bar.set_postfix(loss=f"{lossval:.3f}", refresh=False)
            if not args.quiet and (b % every == 0 or b == nbatches):
                print(f"epoch {epoch:3d}  batch {b:5d}/{nbatches}  trn loss {run / nrun:.4f}  "
                      f"time {time.perf_counter() - start:7.1f}s", flush=True)
                run = nrun = 0.0
        seconds = time.perf_counter() - start
        ttrain += seconds
        tl = tstloss()
        history.append({"epoch": epoch, "tst_loss": tl, "time": seconds})
        if not args.quiet:
            tls = "" if tl is None else f"  tst loss {tl:.4f}"
            print(f"epoch {epoch:3d}  done{tls}  time {seconds:.1f}s", flush=True)
    k = max(len(steps) // 10, 1)
    result = {"epochs": args.epochs, "batches": nbatches, "vocab": len(chars),
              "loss_first": float(np.mean(steps[:k])), "loss_last": float(np.mean(steps[-k:])),
              "losses": steps, "tst_loss0": history[0]["tst_loss"],
              "tst_loss": history[-1]["tst_loss"], "history": history, "train_time": ttrain}
    if args.sample > 0:
        rng = np.random.default_rng(seed)
        sample = generate(model, chars, args.sample, rng=rng)
        result["sample"] = sample
        print(f"--- {args.sample} sampled characters ---\n{sample}\n---", flush=True)
    result["time"] = time.perf_counter() - t0
    tsts = "" if result["tst_loss"] is None else (
        f", tst loss {result['tst_loss0']:.3f} -> {result['tst_loss']:.3f}")
    print(f"charlm: trn loss {result['loss_first']:.3f} (first {k} batches) -> "
          f"{result['loss_last']:.3f} (last {k}){tsts} ({ttrain:.1f}s training, "
          f"{result['time']:.1f}s total)", flush=True)
    return result


if __name__ == "__main__":
    main()
