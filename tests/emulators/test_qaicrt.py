"""The emulated qaicrt (emulators/qaic/python) has the calls SDK-FACTS lists, reads the emulated qaic-exec's QPC and
serves executions by the emulated card's surface."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import EMULATOR

sys.path.insert(0, str(EMULATOR))
import perf_model as pm  # noqa: E402

_spec = importlib.util.spec_from_file_location("emulated_qaicrt", EMULATOR / "python" / "qaicrt.py")
assert _spec is not None and _spec.loader is not None
qaicrt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qaicrt)
OK = qaicrt.QStatus.QS_SUCCESS


def _qpc(tmp_path: Path, onnx: Path, *flags: str) -> Path:
    out = tmp_path / "qpc"
    subprocess.run([sys.executable, "-S", str(EMULATOR / "exec" / "qaic-exec"), f"-m={onnx}", "-aic-hw",
                    "-onnx-define-symbol=batch_size,1", *flags, f"-aic-binary-dir={out}"],
                   check=True, capture_output=True)
    return out


def _program(qpc: Path, context=None):
    context = context or qaicrt.Context(qaicrt.QIDList([0]))
    return context, qaicrt.Program(context, 0, qaicrt.Qpc(str(qpc)), qaicrt.QAicProgramProperties())


def _exec_obj(context, program):
    status, desc = program.qpc.getIoDescriptor()
    assert status == OK
    bindings = desc.selected_set.bindings
    obj = qaicrt.ExecObj(context, program)
    dims = qaicrt.BufferDimensionsVecRef([(4, b.dims) for b in bindings])
    assert obj.setData([qaicrt.QBuffer(bytes(b.size)) for b in bindings], dims) == OK
    return obj


def test_a_qpc_loads_runs_and_hands_back_its_outputs(emulator, retinanet_onnx, tmp_path):
    qpc = _qpc(tmp_path, retinanet_onnx, "-aic-num-cores=4")
    context, program = _program(qpc)
    assert program.load() == OK and program.activate() == OK
    try:
        obj = _exec_obj(context, program)
        queue = qaicrt.Queue(context, 0)
        assert queue.enqueue(obj) == OK and obj.waitForCompletion() == OK
        status, outputs = obj.getData()
        assert status == OK and outputs[-1].size == 4 * qaicrt.OUTPUT_FLOATS
        assert obj.setData([qaicrt.QBuffer(b"x")], None) == qaicrt.QStatus.QS_INVAL  # one buffer per binding
    finally:
        program.unload()


def test_executions_follow_the_cards_surface(emulator, retinanet_onnx, tmp_path):
    qpc = _qpc(tmp_path, retinanet_onnx, "-aic-num-cores=2")
    _, program = _program(qpc)
    q = program.qpc
    cycle, latency = program._timing(4, 2)
    assert cycle == pytest.approx(4 / pm.execution_rate(q.profile, q.cfg, 4, 2, 16, pm.DEFAULT_CARD))
    assert latency == pytest.approx(pm.exec_latency_us(q.profile, q.cfg, 16, pm.DEFAULT_CARD) / 1e6)
    assert program._timing(8, 2)[0] > cycle  # more activations share the card: each one's cycle grows


def test_programs_that_do_not_fit_fail_at_load(emulator, retinanet_onnx, tmp_path):
    qpc = _qpc(tmp_path, retinanet_onnx, "-aic-num-cores=8")
    context, first = _program(qpc)
    _, second = _program(qpc, context)
    _, third = _program(qpc, context)
    try:
        assert first.load() == OK and second.load() == OK
        assert third.load() == qaicrt.QStatus.QS_NOSPC  # 3 x 8 cores on 16 NSPs
    finally:
        first.unload()
        second.unload()


def test_told_to_fail_the_load_or_to_lose_the_device(emulator, retinanet_onnx, tmp_path, monkeypatch):
    qpc = _qpc(tmp_path, retinanet_onnx, "-aic-num-cores=2")
    monkeypatch.setenv("QAIC_EMU_QAICRT_LOAD_FAIL", "-aic-num-cores=4")  # a text of another QPC's command line
    context, program = _program(qpc)
    assert program.load() == OK and program.activate() == OK
    try:
        monkeypatch.setenv("QAIC_EMU_QAICRT_LOAD_FAIL", "-aic-num-cores=2")
        assert _program(qpc, context)[1].load() == qaicrt.QStatus.QS_INVAL
        monkeypatch.setenv("QAIC_EMU_QAICRT_LOST_AFTER", "2")
        obj, queue = _exec_obj(context, program), qaicrt.Queue(context, 0)
        assert queue.enqueue(obj) == OK and obj.waitForCompletion() == OK
        assert queue.enqueue(obj) == qaicrt.QStatus.QS_NODEV
    finally:
        program.unload()
