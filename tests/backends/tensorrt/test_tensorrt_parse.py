"""The parsers on TRTEXEC-FACTS' output samples, verbatim: banner and version lines, the Performance summary, the
warnings, failure lines and exit outcomes, nvidia-smi's CSV line; and trtexec's --exportTimes/--exportOutput JSON."""

from __future__ import annotations

import math

import pytest

from autotune.backends.tensorrt.contract import Version
from autotune.backends.tensorrt.nvidia_smi import number_for_cuda, parse_gpus
from autotune.backends.tensorrt.parse import (compute_variation_pct, is_out_of_memory, outcome, parse_banner_version,
                                              parse_failure, parse_outputs, parse_summary, parse_times,
                                              parse_version_line, parse_warnings)
from autotune.errors import AutotuneError

# TRTEXEC-FACTS "Output", verbatim (its "..." lines included: they must not break the parser)
SUMMARY = """\
[12/01/2026-10:05:31] [I] === Performance summary ===
[12/01/2026-10:05:31] [I] Throughput: 120.699 qps
[12/01/2026-10:05:31] [I] Latency: min = 9.11414 ms, max = 11.7442 ms, mean = 9.81005 ms, median = 9.76404 ms, percentile(90%) = 10.1075 ms, percentile(95%) = 10.1624 ms, percentile(99%) = 11.4742 ms
[12/01/2026-10:05:31] [I] Enqueue Time: min = 0.41 ms, max = 1.2 ms, mean = 0.52 ms, median = 0.5 ms, percentile(90%) = 0.6 ms, percentile(95%) = 0.7 ms, percentile(99%) = 0.9 ms
[12/01/2026-10:05:31] [I] H2D Latency: min = ...   (same shape)
[12/01/2026-10:05:31] [I] GPU Compute Time: min = ...   (same shape)
[12/01/2026-10:05:31] [I] D2H Latency: min = ...   (same shape)
[12/01/2026-10:05:31] [I] Total Host Walltime: 3.02405 s
[12/01/2026-10:05:31] [I] Total GPU Compute Time: 3.00752 s
&&&& PASSED TensorRT.trtexec [TensorRT v110100] # trtexec --loadEngine=model.plan --shapes=input:8x3x224x224
"""
RUNNING = "&&&& RUNNING TensorRT.trtexec [TensorRT v110100] # <command line>"
MULTI = ("[W] * Multiple inference streams are used. Latencies may not be accurate since inferences may run in "
         "parallel.")
UNSTABLE = "[W] * GPU compute time is unstable, with coefficient of variance = 4.1%."
ENQUEUE = "[W] * Throughput may be bound by Enqueue Time rather than GPU Compute ..."


def test_the_banner_and_the_device_line_give_the_version():
    assert parse_banner_version(RUNNING) == Version(major=11, minor=1, patch=0)
    assert str(parse_banner_version(RUNNING)) == "11.1.0"
    assert parse_version_line("[I] TensorRT version: 11.1.0") == Version(major=11, minor=1, patch=0)
    assert parse_banner_version("&&&& RUNNING TensorRT.trtexec [TensorRT v101300] # trtexec") == \
        Version(major=10, minor=13, patch=0)
    assert parse_banner_version("no banner here") is None and parse_version_line("") is None


def test_the_performance_summary_sample():
    summary = parse_summary(SUMMARY)
    assert summary.throughput_qps == pytest.approx(120.699)
    latency = summary.latency
    assert (latency.min, latency.max, latency.mean, latency.median) == (9.11414, 11.7442, 9.81005, 9.76404)
    assert latency.percentiles == {90.0: 10.1075, 95.0: 10.1624, 99.0: 11.4742}
    assert summary.enqueue.median == 0.5 and summary.enqueue.percentiles[99.0] == 0.9
    assert summary.h2d is None and summary.gpu_compute is None and summary.d2h is None  # "..." in the sample
    assert summary.host_walltime_s == pytest.approx(3.02405) and summary.gpu_compute_total_s == pytest.approx(3.00752)
    assert outcome(SUMMARY) == "PASSED"
    assert parse_summary("[I] === Performance summary ===\n[I] Latency: min = 1 ms") is None


def test_the_warning_samples():
    warnings = parse_warnings("\n".join([MULTI, UNSTABLE, ENQUEUE, UNSTABLE, "[W]   If not already in use, ..."]))
    assert warnings == [MULTI[6:], UNSTABLE[6:], ENQUEUE[6:]]  # once each, continuation lines left out
    assert compute_variation_pct(warnings) == 4.1
    assert compute_variation_pct([MULTI[6:]]) is None


@pytest.mark.parametrize("line, reason, oom", [
    ("[E] Error[4]: ...", "Error[4]: ...", False),
    ("[E] Engine could not be created from network", "Engine could not be created from network", False),
    ("[E] Error[2]: [virtualMemoryBuffer.cpp::resizePhysical] ... out of memory",
     "Error[2]: [virtualMemoryBuffer.cpp::resizePhysical] ... out of memory", True),
])
def test_failure_samples_end_with_the_failed_line(line, reason, oom):
    output = f"{RUNNING}\n[12/01/2026-10:05:31] {line}\n&&&& FAILED TensorRT.trtexec [TensorRT v110100] # ..."
    assert parse_failure(output) == reason and is_out_of_memory(reason) == oom
    assert outcome(output) == "FAILED"


def test_an_argument_error_has_no_failed_line():
    output = f"{RUNNING}\n[E] Unknown option: --fp16\n=== Model Options ===\n  --onnx=<file>\n"
    assert parse_failure(output) == "Unknown option: --fp16" and outcome(output) is None
    # an Error[...] line wins over the lines trtexec prints after it
    later = f"{RUNNING}\n[E] Engine could not be created from network\n[E] Error[2]: x out of memory\n"
    assert parse_failure(later) == "Error[2]: x out of memory"


def test_the_nvidia_smi_sample():
    [gpu] = parse_gpus("0, NVIDIA H200, GPU-5a1c..., 143771, 1, 0, 9.0\n")
    assert (gpu.smi_index, gpu.name, gpu.uuid, gpu.memory_total_mib, gpu.memory_used_mib, gpu.utilization_pct,
            gpu.compute_cap) == (0, "NVIDIA H200", "GPU-5a1c...", 143771, 1, 0, "9.0")
    assert gpu.status == "Ready" and gpu.model == "NVIDIA H200 (compute 9.0)"
    busy, lost = parse_gpus("1, NVIDIA H200, GPU-77, 143771, 31000, 93, 9.0\n"
                            "2, NVIDIA H200, GPU-88, [Unknown Error], [Unknown Error], [Unknown Error], 9.0\n")
    assert busy.status == "Busy" and "31000 MiB in use, 93% utilization" in busy.busy_text()
    assert lost.status == "Error" and lost.memory_total_mib is None
    with pytest.raises(AutotuneError, match="unexpected nvidia-smi line"):
        parse_gpus("GPU 0: NVIDIA H200 (UUID: GPU-5a1c)")


def test_cuda_visible_devices_renumbers_the_gpus():
    gpus = parse_gpus("0, A, GPU-aa, 100, 1, 0, 9.0\n1, B, GPU-bb, 100, 1, 0, 9.0\n2, C, GPU-cc, 100, 1, 0, 9.0\n")
    assert [g.cuda_index for g in number_for_cuda(gpus, None)] == [0, 1, 2]
    assert [g.cuda_index for g in number_for_cuda(gpus, "2,0")] == [1, None, 0]
    assert [g.cuda_index for g in number_for_cuda(gpus, "GPU-bb")] == [None, 0, None]
    assert [g.cuda_index for g in number_for_cuda(gpus, "1,7,2")] == [None, 0, None]  # CUDA stops at 7
    assert [g.cuda_index for g in number_for_cuda(gpus, "")] == [None, None, None]


def test_the_export_times_trace():
    text = ('[\n  { "startEnqMs" : 0, "endEnqMs" : 0.4, "startH2dMs" : 0, "endH2dMs" : 0.1, "startComputeMs" : 0.1, '
            '"endComputeMs" : 0.8, "startD2hMs" : 0.8, "endD2hMs" : 0.81, "h2dMs" : 0.1, "computeMs" : 0.7, '
            '"d2hMs" : 0.01, "latencyMs" : 0.81, "endToEndMs" : 0.81 }\n, { "count" : 3 }\n]\n')
    [query] = parse_times(text)
    assert query["latencyMs"] == 0.81 and query["computeMs"] == 0.7
    with pytest.raises(ValueError):
        parse_times("{ not json")


def test_export_output_reads_cxx_infinities():
    text = ('[\n  { "name" : "prob"\n  , "dimensions" : "2x2"\n  , "values" : [ 0.5, inf, -inf, -nan ]\n  }\n'
            ', { "name" : "count"\n  , "dimensions" : ""\n  , "values" : [ 3 ]\n  }\n]\n')
    outputs = parse_outputs(text)
    prob = outputs["prob"]
    assert prob.shape == (2, 2) and prob[0, 0] == 0.5 and prob[0, 1] == math.inf and prob[1, 0] == -math.inf
    assert math.isnan(prob[1, 1]) and outputs["count"].shape == () and outputs["count"] == 3
