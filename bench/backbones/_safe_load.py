"""Read an untrusted checkpoint without executing anything in it.

`torch.load(weights_only=True)` with `argparse.Namespace` as the only allowed global (DINO, iBOT and data2vec
store their `args`); safetensors directly. Anything else is refused unless the user trusts the file.
"""
from __future__ import annotations

import argparse
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

__all__ = ["read_checkpoint", "pickle_globals", "SAFE_GLOBALS", "StubbingUnpickler"]

# yacs' CfgNode (the `config` SimMIM, Swin-Transformer and EsViT pickle beside the weights) is a dict of plain values:
# read as an OrderedDict it runs no code of the file (torch ≥ 2.5 takes (stand-in, "module.name") pairs).
SAFE_GLOBALS: list = [argparse.Namespace, (OrderedDict, "yacs.config.CfgNode")]


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); re-download it") from e


class _Stub(dict):
    """Stand-in for a class or function of the training script: takes any arguments and any state. A dict, so a
    pickled dict subclass (yacs `CfgNode`, SimMIM / Swin / EsViT `config`) gets its items (SETITEMS); `append` and
    `extend` keep a list subclass's items (APPENDS) in `.items_list`."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:   # (dict, slots) from __reduce_ex__
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def append(self, item):
        self.__dict__.setdefault("items_list", []).append(item)

    def extend(self, items):
        for item in items:
            self.append(item)

    def __call__(self, *args, **kwargs):
        return None

    def __hash__(self):   # a stubbed class may be used as a key or a set member
        return id(self)


def _stub(module: str, name: str) -> type:
    return type(name, (_Stub,), {"__module__": f"bench-stub:{module}"})


class StubbingUnpickler(pickle.Unpickler):
    """Trusted loads only: a global that cannot be imported here (`__main__.TrainArgs` of a training script,
    VICReg's `__main__.exclude_bias_and_norm`) becomes a stub instead of an AttributeError; names are kept."""
    stubbed: list[str] = []

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (AttributeError, ImportError):
            StubbingUnpickler.stubbed.append(f"{module}.{name}")
            return _stub(module, name)


class _StubbingPickle:
    """A `pickle_module` for torch.load whose Unpickler stubs unknown globals."""
    Unpickler = StubbingUnpickler
    load = staticmethod(lambda f, **kw: StubbingUnpickler(f, **kw).load())
    __name__ = "pickle"


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False, stubbed: list[str] | None = None) -> Any:
    """The object stored in `path`, loaded on CPU. Raises CheckpointError with the fix on any problem.

    With `trust`, globals that do not import here are stubbed; their names are appended to `stubbed`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found; check the path or use a name from checkpoints.yaml")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty; re-download it")
    kind = _sniff(path)
    if kind == "safetensors" or path.suffix == ".safetensors":
        return _read_safetensors(path)
    if kind is None:   # refused before any unpickler sees it: text, HTML error pages, images, ...
        raise CheckpointError(f"{path}: not a PyTorch (.pth zip or pickle) or safetensors file; check the path, "
                              f"or re-download it (an HTML error page saved as a checkpoint looks like this)")
    if trust:
        StubbingUnpickler.stubbed = []
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_StubbingPickle)
        except Exception as e:  # the user trusted the file; still one line, not a traceback
            made = sorted(set(StubbingUnpickler.stubbed))
            if made:   # the bytes were read; rebuilding a training-script object failed, which is not corruption
                raise CheckpointError(
                    f"{path}: could not rebuild the stubbed training-script object(s) {', '.join(made)} "
                    f"({type(e).__name__}: {e}); install the package that defines them, or save "
                    f"model.state_dict() alone from the training code") from None
            raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e}); re-download it") from None
        if stubbed is not None:
            stubbed.extend(sorted(set(StubbingUnpickler.stubbed)))
        return obj
    try:
        with torch.serialization.safe_globals(_safe_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")   # the refusal below says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "GLOBAL" in msg:
            name = _offending_global(msg)
            raise CheckpointError(
                f"{path}: refused to unpickle {name} (checkpoints are untrusted; only tensors, "
                f"argparse.Namespace and yacs configs load safely); if you trust this file pass --trust-checkpoint, "
                f"or convert it once with `bench convert --trust-checkpoint {path} OUT.safetensors`") from None
        if msg.startswith("Weights only load failed"):   # the safe unpickler refused an opcode or object
            raise CheckpointError(_unsafe_pickle_message(path, kind)) from None
        first = next((ln for ln in msg.splitlines() if ln.strip()), "unpickling failed")
        raise CheckpointError(f"{path}: corrupt checkpoint ({first}); re-download it") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, IndexError, KeyError, TypeError,
            AttributeError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        first = first.split(". ")[0].removeprefix("PytorchStreamReader ")   # torch appends paragraphs of advice
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({first}); re-download it") from None


def _safe_globals() -> list:
    if torch.__version__ >= (2, 5):   # TorchVersion compares with tuples
        return SAFE_GLOBALS
    return [g for g in SAFE_GLOBALS if not isinstance(g, tuple)]


def safe_global_names() -> set[str]:
    """The pickle globals a safe load accepts, by the name the file uses."""
    return {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _safe_globals()}


def _sniff(path: Path) -> str | None:
    """"zip" / "pickle" (torch formats) or "safetensors" from the first bytes, None for anything else."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"
    if head[:1] == b"\x80":   # pickle protocol 2+ (torch's legacy format)
        return "pickle"
    return None


def _unsafe_pickle_message(path: Path, kind: str | None) -> str:
    names = _pickle_global_names(path) if kind == "pickle" else []
    naming = f" that names {', '.join(names[:3])}{', …' if len(names) > 3 else ''}" if names else ""
    what = f"a plain Python pickle{naming}, not a PyTorch checkpoint" if kind == "pickle" else "a pickle"
    return (f"{path}: unsafe pickle ({what}; loading it could run code), refused; pass --trust-checkpoint "
            f"if the file is trusted")


def _pickle_global_names(path: Path, limit: int = 64 << 20) -> list[str]:
    """The globals a plain pickle imports, read from its opcodes without running it (for the message only)."""
    names, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f.read(limit)):
                if isinstance(arg, str):
                    strings = (strings + [arg])[-2:]
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                    names.append(".".join(strings))
    except Exception:  # a damaged pickle: the refusal stands without names
        pass
    return sorted(set(names))


def _offending_global(msg: str) -> str:
    # torch words it "Unsupported global: GLOBAL mod.name was not an allowed global" or "... GLOBAL mod.name whose ..."
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    return f"the global '{m.group(1)}'" if m else "a non-tensor global"


def pickle_globals(path: str | os.PathLike) -> list[str]:
    """Globals a torch pickle names beyond tensors/containers (e.g. argparse.Namespace), read without loading it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return []
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) pickles cannot be scanned; read_checkpoint still refuses foreign globals
        return []
