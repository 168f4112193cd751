"""Emulated ``qaicrt``, the Cloud AI 100 runtime's Python API (SDK-FACTS, "Python runtime"), for autotune's tests and
the main job. Stdlib only; put this folder on the Python path (``PYTHONPATH=emulators/qaic/python``).

The same classes and calls as the real module: Context, QIDList, Queue, Qpc (``getIoDescriptor``),
QAicProgramProperties, Program (``load``, ``activate``, ``deactivate``, ``unload``), ExecObj (``setData``,
``waitForCompletion``, ``getData``), QBuffer, BufferDimensionsVecRef and QStatus; every call returns a QStatus.

It reads the QPC the emulated qaic-exec writes and runs in real time (LoadGen measures the host's clock): each
activated Program serves its enqueued executions in order, one at a time; an execution keeps its Program busy for the
card's cycle at the activations loaded and the executions in flight on it (``perf_model.execution_rate``), and
completes after the longer of that and its execution latency (``perf_model.exec_latency_us``), with the emulator's
noise. Environment, besides the SDK emulator's (QAIC_EMU_NSP, QAIC_EMU_DEVICES(_FILE), QAIC_EMU_SEED,
QAIC_EMU_NOISE, QAIC_EMU_SURFACE):
  QAIC_EMU_QAICRT_LOAD_FAIL   ``1``, or a text in the QPC's qaic-exec command line: Program.load() returns QS_INVAL
  QAIC_EMU_QAICRT_LOST_AFTER  N: the device is gone at the N-th execution enqueued through one Context: that call,
                              the completions still awaited and every later call return QS_NODEV
"""

import enum
import hashlib
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
import onnx_graph  # noqa: E402
import perf_model as pm  # noqa: E402

OUTPUT_FLOATS = 1000  # the emulated program's one output: this many float32 values per sample


class QStatus(enum.IntEnum):
    QS_SUCCESS = 0
    QS_PERM = 1
    QS_AGAIN = 2
    QS_NOMEM = 3
    QS_BUSY = 4
    QS_NODEV = 5
    QS_INVAL = 6
    QS_NOSPC = 7
    QS_BADFD = 8
    QS_TIMEDOUT = 9
    QS_PROTOCOL = 10
    QS_UNSUPPORTED = 11


class QIDList(list):
    """Device ids."""


class BufferDimensionsVecRef(list):
    """(element size, dims) per binding."""


class QBuffer:
    def __init__(self, data=b""):
        self.buf = bytes(data)

    @property
    def size(self):
        return len(self.buf)

    def __bytes__(self):
        return self.buf


class QAicProgramProperties:
    def __init__(self):
        self.dataPathTimeoutMs = 0
        self.devMapping = ""


class Context:
    def __init__(self, devices=None):
        self.devices = list(devices if devices is not None else [0])
        self.executions = 0  # enqueued through it (QAIC_EMU_QAICRT_LOST_AFTER)


_lock = threading.Lock()
_loaded = {}  # device -> Programs loaded on it, this process


def _device_gone(device, context):
    try:
        after = int(os.environ.get("QAIC_EMU_QAICRT_LOST_AFTER", ""))
    except ValueError:
        after = None
    statuses = pm.env_devices(os.environ)
    ready = 0 <= device < len(statuses) and statuses[device] == "Ready"
    return not ready or (after is not None and context.executions >= after)


class _Binding:
    def __init__(self, index, name, dims, size, direction):
        self.index, self.name, self.dims, self.size, self.dir = index, name, list(dims), size, direction
        self.is_partial_buf_allowed = False


class _IoSet:
    def __init__(self, bindings):
        self.bindings = bindings


class _IoDesc:
    def __init__(self, bindings):
        self.selected_set = _IoSet(bindings)


class Qpc:
    def __init__(self, path):
        self.path = os.path.abspath(str(path))
        try:
            with open(os.path.join(self.path, "programqpc.bin")) as fh:
                self.data = json.load(fh)
            self.cfg = pm.normalize_cfg({k: self.data[k] for k in ("cores", "ols", "mos", "clusters", "batch",
                                                                  "multicast", "depth_first")} |
                                        {"precision": self.data.get("precision", "int8"),
                                         "mxfp6": self.data.get("mxfp6", False)})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"Failed to open QPC {self.path}: {exc}") from None
        self.surface = pm.surface(self.data["surface"]) if self.data.get("surface") is not None else None
        self.profile = self.surface.profile if self.surface else pm.resolve_profile(self.data["profile"],
                                                                                    self.data.get("model_bytes"))
        self.card = self.surface.card if self.surface else pm.DEFAULT_CARD

    def getIoDescriptor(self):
        batch = self.cfg["batch"]
        inputs = self.data.get("inputs") or [{"name": "input", "elem_type": 1, "dims": [batch, 3, 224, 224]}]
        bindings = [_Binding(i, spec["name"], spec["dims"], onnx_graph.byte_size(spec) or 0, 0)
                    for i, spec in enumerate(inputs)]
        bindings.append(_Binding(len(bindings), "output", [batch, OUTPUT_FLOATS], 4 * batch * OUTPUT_FLOATS, 1))
        return QStatus.QS_SUCCESS, _IoDesc(bindings)


class Program:
    def __init__(self, context, device_id, qpc, properties=None):
        self.context, self.device, self.qpc = context, device_id, qpc
        self.loaded = self.active = False
        self.free_at = 0.0
        self.in_flight = []  # completion times of its executions not yet complete
        self.lock = threading.Lock()
        self.timing = {}  # (activations, in flight) -> (cycle s, latency s)
        self.rng = None

    def load(self):
        if _device_gone(self.device, self.context):
            return QStatus.QS_NODEV
        if pm.env_matches(os.environ, "QAIC_EMU_QAICRT_LOAD_FAIL", self.qpc.data.get("argv") or []):
            return QStatus.QS_INVAL
        with _lock:
            peers = [p for p in _loaded.get(self.device, []) if p.qpc.path == self.qpc.path]
            reason = pm.activation_check(self.qpc.profile, self.qpc.cfg, len(peers) + 1, 1, pm.env_nsp(os.environ))
            if reason:
                return QStatus.QS_NOSPC if "NSP" in reason else QStatus.QS_NOMEM
            _loaded.setdefault(self.device, []).append(self)
            index = len(peers)
        seed = f"{os.environ.get('QAIC_EMU_SEED', '0')}-{self.qpc.path}-{self.device}-{index}"
        self.rng = random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
        self.loaded = True
        return QStatus.QS_SUCCESS

    def activate(self):
        if not self.loaded:
            return QStatus.QS_INVAL
        self.active = True
        return QStatus.QS_SUCCESS

    def deactivate(self):
        self.active = False
        return QStatus.QS_SUCCESS

    def unload(self):
        with _lock:
            if self in _loaded.get(self.device, []):
                _loaded[self.device].remove(self)
        self.loaded = self.active = False
        return QStatus.QS_SUCCESS

    def schedule(self):
        """When an execution enqueued now starts and completes (monotonic seconds)."""
        now = time.monotonic()
        with self.lock:
            self.in_flight = [t for t in self.in_flight if t > now]
            activations = sum(p.active and p.qpc.path == self.qpc.path for p in _loaded.get(self.device, []))
            cycle, latency = self._timing(max(1, activations), len(self.in_flight) + 1)
            noise = pm.env_float(os.environ, "QAIC_EMU_NOISE", self.qpc.surface.noise if self.qpc.surface else 0.01)
            busy = pm.noisy(cycle, self.rng, noise)
            took = pm.noisy(latency, self.rng, noise)
            if self.rng.random() < 0.05:  # the slight right tail of a card's latencies
                took += self.rng.expovariate(1.0 / (0.03 * latency))
            start = max(now, self.free_at)
            self.free_at = start + busy
            done = start + max(busy, took)
            self.in_flight.append(done)
        return done

    def _timing(self, activations, in_flight):
        key = (activations, in_flight)
        if key not in self.timing:
            qpc, nsp = self.qpc, pm.env_nsp(os.environ)
            rate = pm.execution_rate(qpc.profile, qpc.cfg, activations, in_flight, nsp, qpc.card)
            rate *= qpc.data.get("upgrade_factor", 1.0)
            latency = pm.exec_latency_us(qpc.profile, qpc.cfg, nsp, qpc.card) / 1e6
            self.timing[key] = (activations / rate if rate > 0 else latency, latency)
        return self.timing[key]


class ExecObj:
    def __init__(self, context, program):
        self.context, self.program = context, program
        self.buffers = None
        self.done_at = None
        self.status = QStatus.QS_SUCCESS

    def setData(self, buffers, dims=None):
        _, desc = self.program.qpc.getIoDescriptor()
        bindings = desc.selected_set.bindings
        if len(buffers) != len(bindings):
            return QStatus.QS_INVAL
        for buffer, binding in zip(buffers, bindings):
            if binding.dir == 0 and binding.size and buffer.size != binding.size:
                return QStatus.QS_INVAL  # No matching dimension found
        self.buffers = list(buffers)
        return QStatus.QS_SUCCESS

    def waitForCompletion(self):
        if self.done_at is None:
            return QStatus.QS_INVAL
        delay = self.done_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.done_at = None
        if self.status == QStatus.QS_SUCCESS and _device_gone(self.program.device, self.context):
            self.status = QStatus.QS_NODEV
        return self.status

    def getData(self):
        if self.status != QStatus.QS_SUCCESS:
            return self.status, []
        return QStatus.QS_SUCCESS, self.buffers[:-1] + [QBuffer(bytes(self.buffers[-1].size))]  # its output


class Queue:
    def __init__(self, context, device_id):
        self.context, self.device = context, device_id

    def enqueue(self, exec_obj):
        program = exec_obj.program
        if exec_obj.buffers is None or not program.active:
            return QStatus.QS_INVAL
        with _lock:
            self.context.executions += 1
        if _device_gone(program.device, self.context):
            return QStatus.QS_NODEV
        exec_obj.status = QStatus.QS_SUCCESS
        exec_obj.done_at = program.schedule()
        return QStatus.QS_SUCCESS
