"""Attention maps of a trained run: ``hrrformer explain RUN_DIR INPUT... --out DIR``.

An HRR attention head gives one weight per position, w_t = softmax_t(cos(v_t, q_t† ⊛ β)), so a
layer's heads are H vectors over the sequence, not T × T matrices. Reshaped to an image they
show the 2D structure a model learned from a 1D sequence (the paper's Figure 5); over a file's
bytes they show which regions weighed most. What a weight means, honestly: it scales that
position's own value in the attention output (out_t = w_t v_t); it says what the layer
emphasised, not by itself that the prediction depends on it.

For notebooks: :func:`attention_maps` → (layers, heads, B, T), no drawing. For CLS pooling the
CLS token (position 0) is dropped, so the maps align with the input and, per head, sum to
1 − (the CLS token's weight) over the real positions. Softmax-attention models are refused:
their weights are a T × T matrix per head.

The command writes, for each INPUT, into ``--out``:

* ``<name>.weights.npy`` (layers, heads, T), or (layers, heads, H, W) for images, and
  ``<name>.mean.npy`` (T) or (H, W): the mean over layers and heads;
* ``<name>.png``: image tasks (``image``, ``pathfinder``, ``pathx``; INPUT a png/jpg, made
  gray as the loaders do): the input beside a heatmap per layer and head and their mean;
  ``<name>.heatmap.png`` is the mean map alone at the image's own pixel size. Other tasks: a
  strip over the positions (a row per layer and head, and the mean), with the top-k regions
  marked;
* ``<name>.regions.json`` and ``<name>.html`` (sequence tasks): the top-k regions (offset,
  length, weight, and their bytes or tokens); the page highlights the text (text, retrieval,
  imdb-pairs), or shows a hex view of the top regions (binaries);
* ``explain.json``: the inputs, their predictions (single-sequence tasks) and files.

INPUT is a file: an image for image tasks, a file read as bytes for ``text``, ``binaries``,
``retrieval`` and ``imdb-pairs`` (one document: the pair tasks encode each document alone),
and a ListOps expression for ``listops``. ``--average N --data PATH [--split val] [--label L]``
averages the maps of N examples of class L (default: of each class) from the task's data, as in
the paper's figure (``--data`` and ``--split`` are read as by ``hrrformer eval``: ``--split all``
for the whole of it, classes matched by name to the run's); the average is the plain mean, 0
counted at padding, so it is the expected weight at each position. Both documents of a pair count for pair tasks.
"""

from __future__ import annotations

from ..data.inputs import BYTE_TASKS, IMAGE_TASKS, image_shape, read_image, read_input
from .command import add_arguments, run
from .maps import attention_maps, explain_tokens
from .regions import TEXT_TASKS, Region, default_window, top_regions

# The docstring is the command's --help. The package: maps.py (the weights), regions.py (the
# heaviest windows), draw.py (figures), page.py (the HTML page), output.py (one map's files),
# command.py (the command); input files are read by hrrformer.data.inputs, as predict reads them.

__all__ = [
    "BYTE_TASKS",
    "IMAGE_TASKS",
    "TEXT_TASKS",
    "Region",
    "add_arguments",
    "attention_maps",
    "default_window",
    "explain_tokens",
    "image_shape",
    "read_image",
    "read_input",
    "run",
    "top_regions",
]
