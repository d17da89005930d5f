"""What a user may pass, and the checks every entry point applies to it.

The command line, the notebooks' parameters (through the config dataclasses and the library functions they
call) and the sweep's YAML (whose values reach the same functions) share these names and checks, so a bad
value gets the same message wherever it comes from: the parameter, what is allowed, and what was given.

This module imports nothing heavy (no torch, no transformers), so that `studylib --help` and an argument
error answer at once; the modules that implement the choices import their names from here.
"""

from __future__ import annotations

import argparse
import difflib
import math
import numbers
import os
import re
from pathlib import Path

# ----------------------------------------------------------------------------------------------
# The names (each implemented where it is used: models.PRESETS, pruning, recovery, sweep)

EMBEDDED_PRESETS = ("llava-tiny", "bunny-tiny", "llava-small")  # sized in models.PRESETS
PRETRAINED_PRESETS = ("gemma-270m",)  # built in pretrained.PRETRAINED_PRESETS
BENCHMARKS = ("scene-qa", "pope", "count", "mcq", "ocr", "digits", "text-only")  # generated in data.py
PARADIGMS = ("layerwise", "widthwise")  # their criteria are a registry: pruning.criteria(paradigm)
TRAIN_MODES = ("projector", "lora", "full")
LOSSES = ("ce", "kl", "hidden", "ce+kl", "ce+hidden", "ce+hidden+kl")
KL_POSITIONS = ("answer", "all")
KL_SCALES = ("token_mean", "sequence_sum")  # KL averaged over the positions compared, or summed per sequence
HIDDEN_TARGETS = ("blocks", "final_norm", "scale_free")  # what hidden-state KD matches (recovery.hidden_mse)
TEACHER_INPUTS = ("own", "student")
EXECUTORS = ("local", "slurm", "submitit-local")
DTYPES = ("float32", "bfloat16", "float16")
DEVICE_TYPES = ("cpu", "cuda", "mps")


# ----------------------------------------------------------------------------------------------
# Checks: each returns the checked value or raises a ValueError that names the parameter.
# The `_why_*` helpers say what is wrong (or None), so argparse types and library checks share the words.


def did_you_mean(value, allowed) -> str:
    """" (did you mean 'x'?)" for the closest of `allowed`, or "" when none is close."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choice(name: str, value, allowed) -> str:
    """`value` if it is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}"
                         f"{did_you_mean(value, allowed)}")
    return value


def names(name: str, values, allowed) -> list[str]:
    """A non-empty list whose every element is one of `allowed`."""
    values = list(values)
    if not values:
        raise ValueError(f"{name} names nothing; give one or more of {', '.join(map(str, allowed))}")
    for v in values:
        choice(name, v, allowed)
    return values


def _why_int(value, minimum: int | None, maximum: int | None) -> str | None:
    bounds = " and ".join(b for b in (f">= {minimum}" if minimum is not None else "",
                                      f"<= {maximum}" if maximum is not None else "") if b)
    want = f"must be an integer{' ' + bounds if bounds else ''}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"{want}; got {value!r}"
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        return f"{want}; got {value}"
    return None


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (not a bool) in [minimum, maximum]."""
    why = _why_int(value, minimum, maximum)
    if why:
        raise ValueError(f"{name} {why}")
    return int(value)


def _why_number(value, low, high, low_open: bool, high_open: bool) -> str | None:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    want = f"must be a finite number{' ' + ' and '.join(parts) if parts else ''}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return f"{want}; got {value!r}"
    if low is not None and (value < low or (low_open and value == low)):
        return f"{want}; got {value:g}"
    if high is not None and (value > high or (high_open and value == high)):
        return f"{want}; got {value:g}"
    return None


def number(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> float:
    """A finite real number (not a bool, not nan or inf) in the given interval."""
    why = _why_number(value, low, high, low_open, high_open)
    if why:
        raise ValueError(f"{name} {why}")
    return float(value)


DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda)(:\d+)?$")


def _why_device(text) -> str | None:
    if not isinstance(text, str) or not DEVICE_PATTERN.match(text) or text.startswith(("cpu:", "mps:")):
        return f"must be cpu, cuda, cuda:N or mps; got {text!r}"
    return None


def device_name(name: str, text: str) -> str:
    """'cpu', 'cuda', 'cuda:N' or 'mps' (the spelling only; `device` checks that it exists)."""
    why = _why_device(text)
    if why:
        raise ValueError(f"{name} {why}")
    return text


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ['cpu'] or ['cpu', 'cuda:0', 'cuda:1']."""
    import torch

    out = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def device(name: str, text):
    """The torch.device for `text`; an error naming the devices present when it is not here."""
    import torch

    text = device_name(name, str(text))
    present = available_devices()
    dev = torch.device(text)
    if dev.type == "cpu":
        return dev
    here = dev.type == "mps" and "mps" in present or dev.type == "cuda" and (
        f"cuda:{dev.index or 0}" in present)
    if not here:
        raise ValueError(f"{name} {text} is not available on this machine; available: {', '.join(present)}")
    return dev


def _why_csv(text, allowed) -> str | None:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    hint = f" of {', '.join(allowed)}" if allowed else ""
    if not items:
        return f"must be a comma-separated list{hint}; got {text!r}"
    bad = [t for t in items if allowed is not None and t not in allowed]
    if bad:
        return f"must be a comma-separated list{hint}; {bad[0]!r} is not one{did_you_mean(bad[0], allowed)}"
    return None


def csv(name: str, text: str, allowed=None) -> list[str]:
    """'a,b,c' as a non-empty list (each in `allowed` when given)."""
    why = _why_csv(text, allowed)
    if why:
        raise ValueError(f"{name} {why}")
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def output_path(name: str, path, inputs=(), *, kind: str = "folder") -> Path:
    """Where a command writes: not one of its inputs; a folder not inside an input folder nor holding one (a
    model would be overwritten), a file not over an existing file of an input folder; not an existing thing of
    the other kind; in a folder that can be written."""
    out = Path(path).expanduser().resolve()  # symlinks resolved: a link to a model is that model
    for given in inputs:
        if given is None:
            continue
        src = Path(given).expanduser().resolve()
        inside = src.is_dir() and _inside(out, src) and (kind == "folder" or out.exists())  # a new file beside
        if out == src or inside or (kind == "folder" and _inside(src, out)):  # a model's files is harmless
            raise ValueError(f"{name} {path} would overwrite the input {given}: write to another "
                             f"{'folder' if kind == 'folder' else 'file'}")
    if kind == "folder" and out.exists() and not out.is_dir():
        raise ValueError(f"{name} {path} exists and is not a folder")
    if kind == "file" and out.is_dir():
        raise ValueError(f"{name} {path} is a folder; give a file name")
    if kind == "file" and out.exists() and not os.access(out, os.W_OK):
        raise ValueError(f"{name} {path} cannot be written")
    existing = next(p for p in (out.parents if kind == "file" else [out, *out.parents]) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{name} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path}: the folder {existing} cannot be written")
    return out


def input_file(name: str, path) -> Path:
    """An existing file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{name} {path}: {'is a folder, not a file' if p.is_dir() else 'no such file'}")
    return p


# ----------------------------------------------------------------------------------------------
# The same checks as argparse types (argparse then prints "argument --lr: must be ...", exit code 2)


def _arg(why, convert, checks: str):
    """An argparse type: `why(text)` says what is wrong (or None), `convert(text)` makes the value;
    `checks` ("number", "device", "list") says what it checks, for the tests."""
    def parse(text: str):
        problem = why(text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return convert(text)
    parse.checks = checks
    return parse


def _as_number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _as_int(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def arg_int(minimum: int | None = None, maximum: int | None = None):
    """argparse type: an integer in [minimum, maximum]."""
    return _arg(lambda t: _why_int(_as_int(t), minimum, maximum), int, "number")


def arg_number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
               high_open: bool = False):
    """argparse type: a finite number in the interval."""
    return _arg(lambda t: _why_number(_as_number(t), low, high, low_open, high_open), float, "number")


def arg_device():
    """argparse type: the spelling of a device (its presence is checked before the model loads)."""
    return _arg(_why_device, str, "device")


def arg_csv(allowed=None):
    """argparse type: a non-empty comma-separated list (of `allowed` names when given)."""
    return _arg(lambda t: _why_csv(t, allowed), lambda t: [x.strip() for x in t.split(",") if x.strip()], "list")
