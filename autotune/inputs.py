"""What a model file takes, read from its graph: each input's dtype and shape, the batch symbol and the axis that
carries it in each input, the sizes of the other dynamic dimensions, and the feed of one batch (the samples of
``--inputs FILE.npz`` tiled along the batch axis, or random values). Target-free: backends receive a ModelInputs."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from autotune.errors import AutotuneError

Dim = int | str | None  # a fixed size, a symbol, or a dynamic dimension without a name
RANDOM_INT_HIGH = 4  # random integers are drawn from 0..RANDOM_INT_HIGH-1: valid indices of most tables
FEEDABLE_KINDS = "fiub"  # numpy kinds autotune can feed: floats, signed and unsigned integers, booleans


class Declared(NamedTuple):
    """A graph input as the graph declares it."""

    name: str
    dtype: np.dtype
    dims: tuple[Dim, ...]


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """One graph input: its declared dimensions, the shape of one sample and the axis that carries the batch."""

    name: str
    dtype: np.dtype
    dims: tuple[Dim, ...]  # as the graph declares them
    shape: tuple[int, ...]  # one sample: 1 on the batch axis, every other dimension resolved
    batch_axis: int | None  # None: fed as it is, whatever the batch

    @property
    def scalar(self) -> bool:
        return not self.dims


@dataclass(frozen=True, kw_only=True)
class ModelInputs:
    """The inputs of a model file as autotune feeds them; ``symbols`` are the sizes of its non-batch symbols."""

    inputs: tuple[InputSpec, ...]
    batch_symbol: str | None
    no_batch_reason: str | None = None  # why the model has no batch knob (batch_symbol None)
    symbols: dict[str, int] = field(default_factory=dict)
    samples: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)
    samples_path: Path | None = None
    samples_sha256: str | None = None

    def feed(self, batch_size: int) -> dict[str, np.ndarray]:
        """One batch: each input's sample (or random values) repeated ``batch_size`` times along its batch axis."""
        if self.batch_symbol is None and batch_size != 1:
            raise ValueError(f"batch {batch_size}: the model has no batch symbol (batch 1 only)")
        rng = np.random.default_rng(0)
        feed = {}
        for spec in self.inputs:
            if self.samples is not None:
                value = self.samples[spec.name]
                if spec.batch_axis is not None:
                    value = np.repeat(value, batch_size, axis=spec.batch_axis)
            else:
                shape = list(spec.shape)
                if spec.batch_axis is not None:
                    shape[spec.batch_axis] = batch_size
                value = random_values(rng, spec.dtype, shape)
            feed[spec.name] = np.asarray(value, order="C")  # ascontiguousarray would make a scalar 1-d
        return feed

    def describe(self) -> str:
        """One line for the run's header: the batch symbol and the inputs that carry it, and where values come from."""
        if self.batch_symbol is None:
            text = f"batch: none, batch 1 only ({self.no_batch_reason})"
        else:
            carried = ", ".join(f"{s.name}[{s.batch_axis}]" for s in self.inputs if s.batch_axis is not None)
            text = f"batch: symbol {self.batch_symbol} (inputs {carried})"
            as_given = [s.name for s in self.inputs if s.batch_axis is None]
            if as_given:
                text += f"; inputs fed as given: {', '.join(as_given)}"
        if self.samples_path is not None:
            return text + f"; values from {self.samples_path.name}, tiled to the batch"
        return text + "; random values"

    def warning(self) -> str | None:
        """A line naming the integer and scalar inputs that get random values, or None."""
        if self.samples is not None:
            return None
        named = [f"{s.name} ({s.dtype.name}{', scalar' if s.scalar else ''})" for s in self.inputs
                 if s.scalar or s.dtype.kind in "iu"]
        if not named:
            return None
        if len(named) == 1:
            return f"warning: input {named[0]} gets random values; its values may matter: pass --inputs FILE.npz"
        return (f"warning: inputs {', '.join(named)} get random values; their values may matter: pass --inputs "
                f"FILE.npz")

    def identity(self, *, samples: bool = True) -> str:
        """What decides the workload: the batch symbol, each input's dtype and sample shape (and the samples)."""
        shapes = " ".join(f"{s.name}:{s.dtype.name}{list(s.shape)}@{s.batch_axis}" for s in self.inputs)
        text = f"batch {self.batch_symbol}; {shapes}"
        if samples and self.samples_sha256:
            text += f"; samples {self.samples_sha256}"
        return text


def read_inputs(path: Path, *, batch_dim: str | None = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
                symbols: Mapping[str, int] | None = None, samples: Path | None = None) -> ModelInputs:
    """The inputs of the model at ``path``; raises AutotuneError, on one line, for what cannot be fed.

    ``batch_dim`` names the batch symbol where the graph leaves it ambiguous; ``input_shapes`` (``--input-shape``)
    and ``samples`` (``--inputs``) size the dynamic dimensions other than the batch, as do ``symbols`` (a known
    model's fixed symbols)."""
    declared, outputs = read_graph(path)
    batch, reason = find_batch(declared, outputs, batch_dim)
    given = {name: list(shape) for name, shape in (input_shapes or {}).items()}
    _check_given_shapes(declared, given)
    arrays = load_samples(samples, declared, batch) if samples is not None else None
    sampled = {k: list(a.shape) for k, a in (arrays or {}).items()}
    present = {d for entry in declared for d in entry.dims if isinstance(d, str)}
    known = {k: v for k, v in (symbols or {}).items() if k in present and k != batch}
    sources = [("--input-shape", given)] + ([(samples.name, sampled)] if samples is not None else [])
    values = _symbol_values(declared, batch, sources, known)
    specs = _specs(declared, batch, sampled | given, values)
    return ModelInputs(inputs=specs, batch_symbol=batch, no_batch_reason=reason, symbols=values, samples=arrays,
                       samples_path=samples, samples_sha256=_sha256(samples) if samples is not None else None)


def read_graph(path: Path) -> tuple[list[Declared], list[tuple[Dim, ...]]]:
    """Every graph input that is not an initializer, and the dims of every output (the weights are not read)."""
    import onnx
    from onnx import helper

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError... for a bad file
        raise AutotuneError(f"{path} is not an ONNX model (onnx could not parse it: {type(exc).__name__})") from None
    initializers = {t.name for t in graph.initializer}
    declared = []
    for vi in graph.input:
        if vi.name in initializers:
            continue
        elem = vi.type.tensor_type.elem_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(object)
        if dtype.kind not in FEEDABLE_KINDS:
            kind = helper.tensor_dtype_to_string(elem).removeprefix("TensorProto.").lower() if elem else "unknown"
            raise AutotuneError(f"input {vi.name!r} has type {kind}: autotune feeds numeric and boolean tensors only")
        declared.append(Declared(name=vi.name, dtype=dtype, dims=_dims(vi)))
    return declared, [_dims(vi) for vi in graph.output]


def find_batch(declared: list[Declared], outputs: list[tuple[Dim, ...]],
               batch_dim: str | None) -> tuple[str | None, str | None]:
    """The batch symbol, or None and why there is none: of the symbols that lead an input, the one most inputs
    carry (then: the outputs carry it, it leads more inputs); a tie is ambiguous and needs ``--batch-dim``."""
    symbols = list(dict.fromkeys(d for entry in declared for d in entry.dims if isinstance(d, str)))
    if batch_dim is not None:
        if batch_dim not in symbols:
            known = f"its symbols: {', '.join(symbols)}" if symbols else "they have none: every dimension is fixed"
            raise AutotuneError(f"--batch-dim {batch_dim!r} is not a symbol of the model's inputs ({known})")
        return batch_dim, None
    if not symbols:
        if any(entry.dims[:1] == (None,) for entry in declared):
            return None, ("the inputs' leading dimensions are dynamic but have no name: name the batch in the model "
                          "(onnx.tools.update_model_dims) to tune it")
        return None, "no input has a symbolic dimension"
    leading = [s for s in symbols if any(entry.dims[:1] == (s,) for entry in declared)]
    if not leading:
        return None, (f"no symbol leads an input ({', '.join(symbols)}); pass --batch-dim SYMBOL if one of them "
                      f"is the batch")
    in_outputs = {d for dims in outputs for d in dims if isinstance(d, str)}

    def rank(symbol: str) -> tuple[int, bool, int]:
        return (sum(symbol in entry.dims for entry in declared), symbol in in_outputs,
                sum(entry.dims[:1] == (symbol,) for entry in declared))

    ranked = sorted(leading, key=rank, reverse=True)
    tied = [s for s in ranked if rank(s) == rank(ranked[0])]
    if len(tied) > 1:
        raise AutotuneError(f"the batch is ambiguous: symbols {', '.join(tied)} each lead an input; pass "
                            f"--batch-dim SYMBOL")
    return ranked[0], None


def load_samples(path: Path, declared: list[Declared], batch: str | None) -> dict[str, np.ndarray]:
    """One sample per input from an .npz file, checked against the graph (names, dtypes, ranks, fixed sizes, one
    sample along the batch axis)."""
    arrays = read_arrays(path, declared)
    for entry in declared:
        check_sample(path.name, entry, arrays[entry.name], batch)
    return arrays


def read_arrays(path: Path, declared: list[Declared], *, option: str = "--inputs",
                optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of an .npz file by name: one for each input, and none but those and the ``optional`` names."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array, not an archive of arrays")
        with data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise AutotuneError(f"{option} {path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise AutotuneError(f"{option} {path} is not an .npz file of arrays (numpy.savez): {exc}") from None
    names = [entry.name for entry in declared]
    for name in arrays:
        if name not in names and name not in optional:
            raise AutotuneError(f"{path.name} has {name!r}, which is not an input of the model (inputs: "
                                f"{', '.join(names)})")
    for entry in declared:
        if entry.name not in arrays:
            raise AutotuneError(f"{path.name} lacks input {entry.name!r} (the model's inputs: {', '.join(names)})")
    return arrays


def spelled(name: str, dims: Sequence[Dim]) -> str:
    """``x[N,16]``: an input and its declared dimensions (``?`` for one without a name)."""
    return f"{name}[{','.join('?' if d is None else str(d) for d in dims)}]"


def check_sample(source: str, entry: Declared, array: np.ndarray, batch: str | None) -> None:
    """Raise AutotuneError unless ``array`` is one sample of the input: its dtype, rank, fixed sizes, 1 on the batch
    axis."""
    where, dims, declared = f"{source}: {entry.name!r}", entry.dims, spelled(entry.name, entry.dims)
    if array.dtype != entry.dtype:
        raise AutotuneError(f"{where} is {array.dtype.name}; the model's input takes {entry.dtype.name}")
    if not dims and array.ndim:
        raise AutotuneError(f"{where} is a scalar input: give it as a 0-d array (shape ()), not with a batch axis "
                            f"(shape {array.shape})")
    if array.ndim != len(dims):
        raise AutotuneError(f"{where} has shape {array.shape}; the model's input {declared} takes {len(dims)} "
                            f"dimensions (one sample, as the application feeds it)")
    for axis, (dim, size) in enumerate(zip(dims, array.shape)):
        if batch is not None and dim == batch and size != 1:
            raise AutotuneError(f"{where} has {size} along its batch axis {axis} ({batch}); give one sample (1 "
                                f"there): it is tiled to each batch size")
        if isinstance(dim, int) and size != dim:
            raise AutotuneError(f"{where} has shape {array.shape}; the model's input {declared} needs {dim} at axis "
                                f"{axis}")


def _dims(value_info) -> tuple[Dim, ...]:
    if not value_info.type.HasField("tensor_type"):
        raise AutotuneError(f"{value_info.name!r} is not a tensor: autotune feeds tensors only")
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        raise AutotuneError(f"{value_info.name!r} declares no shape: autotune cannot tell what to feed it")
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                 for d in tensor.shape.dim)


def _check_given_shapes(declared: list[Declared], given: dict[str, list[int]]) -> None:
    by_name = {entry.name: entry.dims for entry in declared}
    for name, shape in given.items():
        option = f"--input-shape {name}={','.join(map(str, shape))}"
        if name not in by_name:
            raise AutotuneError(f"--input-shape names {name!r}, which is not an input of the model (inputs: "
                                f"{', '.join(by_name)})")
        dims = by_name[name]
        if len(shape) != len(dims):
            raise AutotuneError(f"{option} has {len(shape)} dimensions; the model's input has {len(dims)} "
                                f"({spelled(name, dims)})")
        if any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
            raise AutotuneError(f"{option} does not match the model's fixed shape {spelled(name, dims)}")


def _symbol_values(declared: list[Declared], batch: str | None, sources: list[tuple[str, dict[str, list[int]]]],
                   known: dict[str, int]) -> dict[str, int]:
    """The sizes of the non-batch symbols: ``known``, then those each source's shapes give (``--input-shape``,
    the samples); a symbol given two sizes is an error."""
    values = dict(known)
    origin = {k: "the model's known sizes" for k in values}
    for source, shapes in sources:
        for entry in declared:
            for dim, size in zip(entry.dims, shapes.get(entry.name, ())):
                if not isinstance(dim, str) or dim == batch:
                    continue
                if dim in values and values[dim] != size:
                    raise AutotuneError(f"{source} gives {entry.name!r} {dim}={size}, but {origin[dim]} give "
                                        f"{dim}={values[dim]}")
                values.setdefault(dim, size)
                origin.setdefault(dim, f"{source} {entry.name!r}")
    return values


def _specs(declared: list[Declared], batch: str | None, shapes: dict[str, list[int]],
           values: dict[str, int]) -> tuple[InputSpec, ...]:
    """Every input with the shape of one sample; one error lists every dynamic dimension left without a size."""
    specs, missing = [], []
    for entry in declared:
        known = shapes.get(entry.name)
        shape = []
        for axis, dim in enumerate(entry.dims):
            if batch is not None and dim == batch:
                size: int | None = 1
            elif isinstance(dim, int):
                size = dim
            elif isinstance(dim, str) and dim in values:
                size = values[dim]
            else:
                size = known[axis] if known else None
            if size is None:
                missing.append((entry, axis))
            shape.append(size or 1)
        axis = entry.dims.index(batch) if batch is not None and batch in entry.dims else None
        specs.append(InputSpec(name=entry.name, dtype=entry.dtype, dims=entry.dims, shape=tuple(shape),
                               batch_axis=axis))
    if missing:
        raise AutotuneError(_missing_message(missing, specs))
    return tuple(specs)


def _missing_message(missing: list[tuple[Declared, int]], specs: list[InputSpec]) -> str:
    """The dynamic dimensions without a size, and the ``--input-shape`` options to paste (1 where a size is due)."""
    names = {entry.name for entry, _ in missing}
    paste = " ".join(f"--input-shape {s.name}={','.join(map(str, s.shape))}" for s in specs if s.name in names)
    if len(missing) == 1:
        entry, axis = missing[0]
        dim = entry.dims[axis]
        what = f"dynamic dimension {dim!r}" if dim else f"a dynamic dimension without a name (axis {axis})"
        return f"input {entry.name!r} has {what}: pass {paste} with its size in place of the 1"
    listed = ", ".join(f"{entry.name}[{axis}] {entry.dims[axis] or '(no name)'}" for entry, axis in missing)
    return f"inputs have dynamic dimensions {listed}: pass {paste} with their sizes in place of those 1s"


def random_values(rng: np.random.Generator, dtype: np.dtype, shape: list[int]) -> np.ndarray:
    """Random values of ``dtype``: floats in [0, 1), integers below RANDOM_INT_HIGH, booleans."""
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, RANDOM_INT_HIGH, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
