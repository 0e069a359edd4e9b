"""The loop thread's instructions by owner (bench/profile.py's ``OWNERS``), counted by
callgrind in the whole process: ``python -m bench whole --callgrind --owners``.

callgrind sees CPython's C functions, not the Python functions they run. So the sidecar
runs with a small C extension (built here with gcc) that installs a PEP 523 frame
evaluator: a frame whose file has an owner is evaluated through a C function of that
owner's own (``zz_owner_NN``), one of any other file directly. Run with ``--fn-skip`` for
every other function name, callgrind charges each instruction to the innermost
``zz_owner_NN`` on the stack: to the innermost frame that has an owner, as
``profile.owner`` charges a py-spy sample (json or socket work to whoever called it).

The evaluator changes what it measures: with one installed CPython no longer inlines
Python-to-Python calls, so every call costs more; the totals are reported beside the
plain run's and the shares are what to read. Start-up code that runs before
``sitecustomize`` and a thread's code outside any owned frame are "not under an owner".
"""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .profile import OWNERS
from .trees import Tree

PREFIX = "zz_owner_"
NAMES = list(dict.fromkeys(name for _, name in OWNERS))
SOURCE = r"""
#define Py_BUILD_CORE 1
#include <Python.h>
#include "internal/pycore_frame.h"

#define N %(n)d
typedef PyObject *(*eval)(PyThreadState *, _PyInterpreterFrame *, int);
static Py_ssize_t extra = -1;  /* the code objects' slot: owner index + 2, 0: unknown */
static PyObject *prefixes;  /* [(substring of the file name, owner index)] */
%(wrappers)s
static eval wrappers[N] = {%(table)s};

static long owner_of(PyObject *code) {
    PyObject *type, *value, *tb;
    long found = -1;
    PyErr_Fetch(&type, &value, &tb);  /* a frame thrown into has its exception set */
    const char *file = PyUnicode_AsUTF8(((PyCodeObject *)code)->co_filename);
    for (Py_ssize_t i = 0; file && i < PyList_GET_SIZE(prefixes); i++) {
        PyObject *pair = PyList_GET_ITEM(prefixes, i);
        if (strstr(file, PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 0)))) {
            found = PyLong_AsLong(PyTuple_GET_ITEM(pair, 1));
            break;
        }
    }
    PyErr_Clear();
    _PyCode_SetExtra(code, extra, (void *)(found + 2));
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    return found;
}

static PyObject *evaluate(PyThreadState *ts, _PyInterpreterFrame *frame, int throw) {
    PyObject *code = (PyObject *)frame->f_code;
    void *known = NULL;
    long i;
    _PyCode_GetExtra(code, extra, &known);
    i = known ? (long)(Py_intptr_t)known - 2 : owner_of(code);
    if (i < 0 || i >= N) return _PyEval_EvalFrameDefault(ts, frame, throw);
    return wrappers[i](ts, frame, throw);
}

static PyObject *install(PyObject *self, PyObject *list) {
    Py_XSETREF(prefixes, Py_NewRef(list));
    if (extra < 0 && (extra = _PyEval_RequestCodeExtraIndex(NULL)) < 0) return NULL;
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), evaluate);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"install", install, METH_O, NULL}, {NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ownerhook", NULL, -1, methods};
PyMODINIT_FUNC PyInit__ownerhook(void) { return PyModule_Create(&module); }
"""
WRAPPER = """__attribute__((noinline)) PyObject *%(name)s(PyThreadState *ts,
        _PyInterpreterFrame *frame, int throw) {
    return _PyEval_EvalFrameDefault(ts, frame, throw);
}
"""
SITECUSTOMIZE = """
import _ownerhook
_ownerhook.install({prefixes!r})
"""


def build(directory: Path) -> None:
    """The extension and a ``sitecustomize`` that installs it, in ``directory`` (put it
    on the sidecar's PYTHONPATH)."""
    names = [f"{PREFIX}{i:02d}" for i in range(len(NAMES))]
    source = SOURCE % {"n": len(names), "table": ", ".join(names),
                       "wrappers": "".join(WRAPPER % {"name": n} for n in names)}
    (directory / "_ownerhook.c").write_text(source)
    # -O0: identical wrappers must stay apart (no identical-code folding)
    subprocess.run(["gcc", "-O0", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"],
                    "-o", str(directory / "_ownerhook.so"), str(directory / "_ownerhook.c")],
                   check=True)
    prefixes = [(prefix, NAMES.index(name)) for prefix, name in OWNERS]
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE.format(prefixes=prefixes))


# the bottoms of the threads' and signal handlers' stacks stay (callgrind needs a function
# that is not skipped under a skipped one: CPython's C signal handler for SIGTERM); what
# runs in them outside any owner is "not under an owner"
KEPT = (PREFIX, "_start", "_dl_", "__libc_start", "main", "(below main)",
        "start_thread", "clone", "signal_handler")


def skip_options(kept: tuple[str, ...] = KEPT) -> list[str]:
    """``--fn-skip`` patterns for every function name that starts with none of ``kept``
    (callgrind's patterns know only ``*`` and ``?``): each such name leaves the tree of
    the kept prefixes at some first character."""
    chars = string.ascii_letters + string.digits + "_.@$("  # what starts a symbol's part
    heads = {k[:i] for k in kept for i in range(len(k) + 1)}
    inner = [head for head in sorted(heads) if head not in kept]
    return [*(f"--fn-skip={head}" for head in inner if head),  # a name that is one
            *(f"--fn-skip={head}{c}*" for head in inner for c in chars if head + c not in heads)]


# callgrind_annotate's self costs; ``'2``: the wrapper under itself (a recursion level)
_SELF = re.compile(rf"^\s*([\d,]+)\s.*?:{PREFIX}(\d+)(?:'\d+)? ", re.M)


def by_owner(annotated: str) -> dict[str, int]:
    """Each owner's instructions from ``callgrind_annotate`` of a thread's file (with
    the skips, a wrapper's self cost is everything under it but a nested owner's)."""
    owners: dict[str, int] = {}
    for ir, i in _SELF.findall(annotated):
        owners[NAMES[int(i)]] = owners.get(NAMES[int(i)], 0) + int(ir.replace(",", ""))
    return owners


@dataclass(frozen=True)
class Hooked(Tree):
    """This tree's sidecar with the evaluator's directory on its PYTHONPATH."""
    hook: Path = Path()

    def environ(self, env: dict[str, str]) -> dict[str, str]:
        env = super().environ(env)
        return {**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{self.hook}"}


def annotate(path: Path) -> dict[str, int]:
    done = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)],
                          capture_output=True, text=True, check=True)
    return by_owner(done.stdout)


if __name__ == "__main__":
    print(json.dumps(annotate(Path(sys.argv[1])), indent=1))
