"""Cloud AI 100 measured through its runtime's Python API (``qaicrt``; SDK-FACTS, "Python runtime"): the module found
under the SDK root or on the Python path, a QPC loaded as one Program per activation with ``set size`` ExecObjs each,
and every scenario run by LoadGen over them (each query's samples issued as batches of the compiled batch size).

Every qaicrt call returns a ``QStatus``; one that is not ``QS_SUCCESS`` becomes a MeasureFailure naming the call and
the status (the trial is infeasible with it), ``QS_NODEV`` a DeviceFailure (the device is set aside).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from autotune.backends._loadgen_measure import measure_scenario, pooled_workload
from autotune.backends.base import Measurement
from autotune.errors import DeviceFailure, MeasureFailure

DATA_PATH_TIMEOUT_MS = 60_000
STATUS_MEANINGS = {  # the runtime's QStatus values (QAicRuntimeTypes.h) in words
    "QS_PERM": "permission denied", "QS_AGAIN": "try again", "QS_NOMEM": "not enough memory",
    "QS_BUSY": "device or resource busy", "QS_NODEV": "no such device", "QS_INVAL": "invalid argument",
    "QS_NOSPC": "no space left on the device", "QS_BADFD": "bad file descriptor", "QS_TIMEDOUT": "timed out",
    "QS_PROTOCOL": "protocol error", "QS_UNSUPPORTED": "unsupported",
}
_LOADED: dict[str, ModuleType] = {}  # by file: a module is executed once per process


def runtime_dirs(sdk_root: Path) -> list[Path]:
    """Where an SDK keeps qaicrt (``dev/lib/<machine>``, beside libQAic.so) and its Python modules (``dev/python``)."""
    return [sdk_root / "dev" / "lib" / platform.machine(), sdk_root / "dev" / "python"]


def find_qaicrt(sdk_root: Path, where: str = "auto") -> tuple[ModuleType | None, str]:
    """qaicrt and a few words on it: ``where`` is ``auto`` (the SDK root's runtime folders, then the Python path),
    ``off``, or a folder holding it. (None, why) where it cannot be imported."""
    if where == "off":
        return None, "qaicrt not used (--qaicrt off)"
    dirs = [Path(where)] if where != "auto" else runtime_dirs(sdk_root)
    spec = importlib.machinery.PathFinder.find_spec("qaicrt", [str(d) for d in dirs] +
                                                    (sys.path if where == "auto" else []))
    if spec is None or spec.origin is None or spec.loader is None:
        places = str(dirs[0]) if where != "auto" else f"{dirs[0]}, {dirs[1]} or the Python path"
        return None, f"qaicrt not importable (not in {places})"
    if spec.origin not in _LOADED:
        try:
            for lib in (d / "libQAic.so" for d in dirs if (d / "libQAic.so").is_file()):
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)  # qaicrt's own library, from where it lies
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except (ImportError, OSError) as exc:
            return None, f"qaicrt at {spec.origin} cannot be imported: {exc}"
        _LOADED[spec.origin] = module
        if where == "auto":  # the SDK's QAicApi_pb2 (dev/python) importable, as Qualcomm's own scripts make it
            sys.path.extend(str(d) for d in dirs if d.is_dir() and str(d) not in sys.path)
    return _LOADED[spec.origin], f"qaicrt from {spec.origin}"


@dataclass(kw_only=True)
class LoadedQpc:
    """A QPC on one device: ``activations`` activated Programs and ``set_size`` ExecObjs each (the slots), every
    ExecObj holding one batch of inputs and its own output buffers."""

    qaicrt: ModuleType
    device: int
    queue: Any
    programs: list[Any] = field(default_factory=list)
    slots: list[Any] = field(default_factory=list)

    def check(self, status: Any, call: str) -> None:
        """A call's QStatus: MeasureFailure unless QS_SUCCESS, DeviceFailure for QS_NODEV."""
        if status == self.qaicrt.QStatus.QS_SUCCESS:
            return
        name = getattr(status, "name", str(status))
        text = f"qaicrt {call} returned {name}" + (f" ({STATUS_MEANINGS[name]})" if name in STATUS_MEANINGS else "")
        if name == "QS_NODEV":
            raise DeviceFailure(f"device QID {self.device}: {text}")
        raise MeasureFailure(f"{text} on QID {self.device}")

    def run(self, slot: Any) -> None:
        """One batch on one ExecObj: enqueued, waited for, its outputs read back."""
        self.check(self.queue.enqueue(slot), "Queue.enqueue()")
        self.check(slot.waitForCompletion(), "ExecObj.waitForCompletion()")
        status, _ = slot.getData()
        self.check(status, "ExecObj.getData()")

    def close(self) -> None:
        """Deactivate and unload every Program (what could not be is left to the runtime)."""
        for program in self.programs:
            for call in ("deactivate", "unload"):
                try:
                    getattr(program, call)()
                except Exception:  # the runtime's own exception types; a device gone refuses them too
                    pass
        self.programs, self.slots = [], []


def load_qpc(qaicrt: ModuleType, qpc_dir: Path, *, device: int, activations: int, set_size: int,
             feed: dict[str, np.ndarray]) -> LoadedQpc:
    """The QPC in ``qpc_dir`` loaded and activated ``activations`` times on ``device``, ``set_size`` ExecObjs each
    holding ``feed`` (one batch; a binding the feed does not name gets zeros). Slots alternate between activations,
    so that a lightly loaded SUT spreads its batches over them."""
    try:
        context = qaicrt.Context(qaicrt.QIDList([device]))
        loaded = LoadedQpc(qaicrt=qaicrt, device=device, queue=qaicrt.Queue(context, device))
        qpc = qaicrt.Qpc(str(qpc_dir))
        bindings = io_bindings(loaded, qpc)
    except (MeasureFailure, DeviceFailure):
        raise
    except Exception as exc:  # the runtime's own exception types
        raise MeasureFailure(f"qaicrt cannot open the QPC {qpc_dir}: {exc}") from None
    properties = qaicrt.QAicProgramProperties()
    properties.dataPathTimeoutMs = DATA_PATH_TIMEOUT_MS
    try:
        for _ in range(activations):
            program = qaicrt.Program(context, device, qpc, properties)
            loaded.programs.append(program)
            loaded.check(program.load(), "Program.load()")
            loaded.check(program.activate(), "Program.activate()")
        inputs = {b.name: qaicrt.QBuffer(_bytes_of(feed, b)) for b in bindings if b.name in feed}
        for _ in range(set_size):
            for program in loaded.programs:
                slot = qaicrt.ExecObj(context, program)
                buffers = [inputs[b.name] if b.name in inputs else qaicrt.QBuffer(bytes(b.size)) for b in bindings]
                dims = qaicrt.BufferDimensionsVecRef([(b.size // max(1, int(np.prod(b.dims))), list(b.dims))
                                                      for b in bindings])
                loaded.check(slot.setData(buffers, dims), "ExecObj.setData()")
                loaded.slots.append(slot)
    except (MeasureFailure, DeviceFailure):
        loaded.close()
        raise
    except Exception as exc:  # the runtime's own exception types
        loaded.close()
        raise MeasureFailure(f"qaicrt cannot load the QPC {qpc_dir}: {exc}") from None
    except BaseException:
        loaded.close()
        raise
    return loaded


def io_bindings(loaded: LoadedQpc, qpc: Any) -> Sequence[Any]:
    """The program's bindings (name, dims, size in bytes) from its IO descriptor; one the runtime hands back as
    protobuf bytes is read with the SDK's ``QAicApi_pb2`` (beside qaicrt)."""
    status, descriptor = qpc.getIoDescriptor()
    loaded.check(status, "Qpc.getIoDescriptor()")
    if not hasattr(descriptor, "selected_set"):
        import QAicApi_pb2  # the SDK's dev/python: on the path where qaicrt was found in the SDK, else PYTHONPATH

        parsed = QAicApi_pb2.IoDesc()
        parsed.ParseFromString(bytes(descriptor))
        descriptor = parsed
    return list(descriptor.selected_set.bindings)


def _bytes_of(feed: dict[str, np.ndarray], binding: Any) -> bytes:
    data = np.ascontiguousarray(feed[binding.name]).tobytes()
    if len(data) != binding.size:
        raise MeasureFailure(f"input {binding.name} holds {len(data)} bytes; the QPC's binding takes {binding.size} "
                             f"(dims {list(binding.dims)})")
    return data


def measure(qaicrt: ModuleType, qpc_dir: Path, *, device: int, activations: int, set_size: int, batch_size: int,
            feed: dict[str, np.ndarray], scenario: str | None, bound_ms: float | None, seconds: float,
            log_dir: Path) -> Measurement:
    """``scenario`` run by LoadGen over the loaded QPC (its logs, ``mlperf_log_detail.txt`` included, in a new folder
    under ``log_dir``); the programs are unloaded afterwards, whatever happened."""
    log_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="loadgen-", dir=log_dir))
    loaded = load_qpc(qaicrt, qpc_dir, device=device, activations=activations, set_size=set_size, feed=feed)
    try:
        work = pooled_workload(loaded.run, loaded.slots, batch_size=batch_size, concurrency=activations,
                               sut=f"qaicrt, {activations} activations x {set_size} ExecObjs")
        measurement = measure_scenario(work, scenario=scenario, bound_ms=bound_ms, seconds=seconds, log_dir=run_dir)
    except MeasureFailure as failure:
        failure.log_path = failure.log_path or run_dir
        raise
    finally:
        loaded.close()
    return measurement
