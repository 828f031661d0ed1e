"""MkDocs hook: every ```python block of the documentation runs while the site is built.

The blocks of one page run in order, in one namespace, with the page itself as their source file
(so ``knetc.grad`` can read the functions they define, and ``knetc.show`` names the page's
lines).
A block that raises stops the build, naming the page and the line: an example that no longer
works cannot be published.

* ```python   runs.  ```py (or any other language) is shown without running.
* A line ``<!-- output -->`` right after a block (blank lines between are allowed) is replaced by
  what the block printed, as a text block; ``<!-- output python -->`` highlights it as Python
  (``knetc.show``'s generated code). Outputs are produced by the build, so they never go stale.
* ``KNETC_DOCS_RUN=0`` builds without running anything (outputs then say so).

The datasets come from knetc's loaders as usual (``KNETC_DATA``, the cache, or a download).
"""
from __future__ import annotations

import contextlib
import io
import linecache
import os
import re
import traceback

from mkdocs.exceptions import PluginError

_OPEN = re.compile(r"^```python\s*$")
_CLOSE = re.compile(r"^```\s*$")
_OTHER_FENCE = re.compile(r"^```")
_OUTPUT = re.compile(r"^<!--\s*output(?:\s+(\w+))?\s*-->\s*$")


def _blocks(lines):
    """(first code line index, end index, code) of each ```python block; other fences skipped."""
    i, out = 0, []
    while i < len(lines):
        line = lines[i]
        if _OTHER_FENCE.match(line):
            run = bool(_OPEN.match(line))
            j = i + 1
            while j < len(lines) and not _CLOSE.match(lines[j]):
                j += 1
            if run:
                out.append((i + 1, j, "".join(lines[i + 1:j])))
            i = j + 1
        else:
            i += 1
    return out


def on_page_markdown(markdown: str, page, config, files) -> str:
    lines = markdown.splitlines(True)
    blocks = _blocks(lines)
    if not blocks:
        return markdown
    run = os.environ.get("KNETC_DOCS_RUN", "1") != "0"
    os.environ.setdefault("KNETC_PROGRESS", "0")
    folder, name = os.path.split(page.file.abs_src_path)
    namespace = {"__name__": "__docs__", "__file__": page.file.abs_src_path}
    replace = {}   # index of an output marker -> the lines replacing it
    for n, (first, end, code) in enumerate(blocks):
        # Each block is one compile unit: the page with every other line blanked, so line
        # numbers are the page's. knetc re-reads a function's file to parse it, and compiles it
        # to check it is the code that runs; the page as a whole is not Python, so each block
        # is registered in linecache under a name of its own that still names the page:
        # docs/tutorial.md, docs/./tutorial.md, docs/././tutorial.md, ...
        filename = os.path.join(folder, *[os.curdir] * n, name)
        text = [line if first <= i < end else "\n" for i, line in enumerate(lines)]
        linecache.cache[filename] = (sum(map(len, text)), None, text, filename)
        printed = io.StringIO()
        if run:
            try:
                compiled = compile("".join(text), filename, "exec", dont_inherit=True)
                with contextlib.redirect_stdout(printed):
                    exec(compiled, namespace)
            except Exception as e:
                raise PluginError(
                    f"docs/{page.file.src_uri}:{first + 1}: this code block raised "
                    f"{type(e).__name__}: {e}\n{traceback.format_exc()}") from e
        k = end + 1
        while k < len(lines) and not lines[k].strip():
            k += 1
        marker = _OUTPUT.match(lines[k]) if k < len(lines) else None
        if marker:
            text = printed.getvalue() if run else "(not run: KNETC_DOCS_RUN=0)\n"
            if not text.endswith("\n"):
                text += "\n"
            replace[k] = [f"```{marker.group(1) or 'text'}\n", text, "```\n"]
    return "".join(part for i, line in enumerate(lines) for part in replace.get(i, [line]))
