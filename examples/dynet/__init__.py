"""DyNet's four dynamic-network benchmarks (neulab/dynet-benchmark; Knet.jl's
``examples/dynet-benchmark``) written as a knetc user would write them: a Python loop over the
words of a sentence, a recursive function over a tree, Python ints as word ids, ``knetc.gradloss``
of the loss and ``knetc.update`` with SGD.

``rnnlm`` (PTB language model, batch 64), ``tagger`` (WikiNER BiLSTM tagger), ``tagger_char``
(the same with character BiLSTMs for rare words), ``treenn`` (SST tree LSTM); ``data`` makes the
seeded synthetic sets and reads the real files. ``benchmarks/dynet.py`` times them against
PyTorch eager and HIPS autograd.
"""
