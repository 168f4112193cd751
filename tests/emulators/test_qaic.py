"""The emulated Cloud AI 100 SDK behaves like qaic/SDK-FACTS.md says the real one does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import EMULATOR as EMU
QAIC_EXEC = EMU / "exec" / "qaic-exec"
QAIC_RUNNER = EMU / "exec" / "qaic-runner"
QAIC_UTIL = EMU / "tools" / "qaic-util"

sys.path.insert(0, str(EMU))
import perf_model as pm  # noqa: E402

STATS_RE = re.compile(
    r"^InferenceCnt (\d+) TotalDuration (\d+)us BatchSize (\d+) Inf/Sec (\d+\.\d{3})$", re.M)
ERROR_LINE_RE = re.compile(r"^ERROR : \[\d\d:\d\d:\d\d\.\d{3}\]\[error\]")
LATENCY_HEADER = ("hostRoundTripUs,enqTimeUs,preProcTimeUs,submitTimeUs,execTotalUs,exectoVcUs,"
                  "execToCompleteUs,postProcUs,totalRoundtripTimeUs")


def run(tool: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("QAIC_EMU_")}
    full_env.update(env)
    # sys.executable -S: skips a slow `env python3` shim and site; test_tools_run_directly covers the shebang
    return subprocess.run([sys.executable, "-S", str(tool), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "resnet50_tiny.onnx"
    path.write_bytes(b"\x08\x07" * 2048)
    return path


def compile_qpc(model: Path, cwd: Path, name: str, *flags: str) -> Path:
    out = cwd / name
    res = run(QAIC_EXEC, f"-m={model}", "-aic-hw", "-aic-hw-version=2.0", "-compile-only",
              *flags, f"-aic-binary-dir={out}", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_scripts_are_executable() -> None:
    for tool in (QAIC_EXEC, QAIC_RUNNER, QAIC_UTIL):
        assert os.access(tool, os.X_OK), tool
        assert tool.read_text().startswith("#!/usr/bin/env python3\n")
    for xml in ("apps.xml", "platform.xml"):
        text = (EMU / "versions" / xml).read_text()
        assert "<base_version>1.12.2</base_version>" in text and "<build_id>" in text


def test_tools_run_directly(tmp_path: Path, model: Path) -> None:
    res = subprocess.run([str(QAIC_UTIL), "-q"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.startswith("Number of devices: ")
    res = subprocess.run([str(QAIC_EXEC), f"-m={model}", "-aic-binary-dir=d"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([str(QAIC_RUNNER), "-t", "d"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0 and STATS_RE.search(res.stdout), res.stderr


def test_exec_invalid_option(tmp_path: Path, model: Path) -> None:
    res = run(QAIC_EXEC, f"-m={model}", "-retained-state", cwd=tmp_path)
    assert res.returncode == 1
    assert ("Invalid option -retained-state. Use -h, -help, or --help for list of options."
            in res.stderr)
    res = run(QAIC_EXEC, f"-m={model}", "-aic-num-coresx=2", cwd=tmp_path)
    assert res.returncode == 1
    assert "Invalid option -aic-num-coresx. Use -h" in res.stderr


def test_exec_success_writes_qpc(tmp_path: Path, model: Path) -> None:
    res = run(QAIC_EXEC, f"-m={model}", "-onnx-define-symbol=batch_size,4", "-aic-hw",
              "-aic-hw-version=2.0", "-aic-num-cores=2", "-mos=1", "-ols=2", "-multicast-weights",
              "-convert-to-fp16", "-stats-batchsize=4", "-aic-binary-dir=./qpc", "-compile-only",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"Reading ONNX Model from {model}"
    assert "Compile started ..............." in lines
    assert "Compiling model with FP16 precision." in lines
    assert lines[-1] == "Generated binary is present at ./qpc"
    assert (tmp_path / "qpc" / "programqpc.bin").is_file()
    # default output dir, INT8 with quantization flags
    res = run(QAIC_EXEC, f"-m={model}", "-quantization-precision=Int8", cwd=tmp_path / "qpc")
    assert res.returncode == 0, res.stderr
    assert "Compiling model with INT8 precision." in res.stdout
    assert (tmp_path / "qpc" / "qpc" / "programqpc.bin").is_file()


RESNET_BASE = ("-aic-hw -aic-hw-version=2.0 -quantization-schema=symmetric_with_uint8 "
               "-quantization-precision=Int8 -output-node-name=ArgMax -vvv -compile-only "
               "-use-producer-dma=1")
RETINANET_BASE = ("-aic-hw -aic-hw-version=2.0 -compile-only -enable-channelwise "
                  "-onnx-define-symbol=batch_size,1 -node-precision-info=npi.yaml "
                  "-quantization-schema-constants=symmetric_with_uint8 "
                  "-quantization-schema-activations=asymmetric -quantization-calibration=None")
BERT_BASE = ("-aic-hw -aic-hw-version=2.0 -execute-nodes-in-fp16=Add,Div,Erf,Softmax "
             "-quantization-schema=symmetric_with_uint8 -quantization-precision=Int8 "
             "-quantization-precision-bias=Int32 -vvv -compile-only -onnx-define-symbol=batch_size,1 "
             "-onnx-define-symbol=seg_length,384 -multicast-weights -combine-inputs=false "
             "-combine-outputs=false")
BERT_ARGS = "-allocator-dealloc-delay=2 -size-split-granularity=1536 -vtcm-working-set-limit-ratio=1"


@pytest.mark.parametrize(
    "name, flags",
    [
        ("resnet50.onnx", f"{RESNET_BASE} -sdp-cluster-sizes=2,2 -multicast-weights "
                          "-aic-num-cores=4 -mos=1,2 -ols=4 -batchsize=8"),
        ("resnet50.onnx", f"{RESNET_BASE} -aic-num-of-instances=1 -sdp-cluster-sizes=4,4 -mos=1,4 "
                          "-aic-num-cores=8 -ols=4 -batchsize=8"),
        ("retinanet.onnx", f"{RETINANET_BASE} -aic-enable-depth-first -aic-num-cores=1 -mos=1 -ols=1"),
        ("retinanet.onnx", f"{RETINANET_BASE} -aic-num-cores=2 -mos=2 -ols=1 -aic-enable-depth-first "
                           "-aic-depth-first-mem=16"),
        ("bert-99.onnx", f"{BERT_BASE} {BERT_ARGS} -aic-num-cores=1 -mos=1 -ols=3"),
        ("bert-99.onnx", f"{BERT_BASE} -aic-num-cores=8 -mos=8 -ols=1"),
        ("bert-99.9.onnx", "-aic-hw -aic-hw-version=2.0 -convert-to-fp16 -vvv -compile-only "
                           "-onnx-define-symbol=batch_size,1 -onnx-define-symbol=seg_length,384 "
                           "-combine-inputs=false -combine-outputs=false -aic-num-cores=2 -mos=1 "
                           "-ols=2 -mxfp6-matmul"),
    ],
)
def test_exec_accepts_mlperf_presets(tmp_path: Path, name: str, flags: str) -> None:
    (tmp_path / name).write_bytes(b"onnx")
    (tmp_path / "npi.yaml").write_text('FP16NodeInstanceNames: ["conv_1"]\n')
    (tmp_path / "calib.raw").write_bytes(b"\0" * 16)
    (tmp_path / "calib.txt").write_text("calib.raw\n")
    dumped = run(QAIC_EXEC, f"-model={name}", "-dump-profile=profile.yaml", "-input-list-file=calib.txt", cwd=tmp_path)
    assert dumped.returncode == 0, dumped.stderr
    res = run(QAIC_EXEC, f"-model={name}", "-load-profile=profile.yaml", *flags.split(),
              "-aic-binary-dir=elfs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "elfs" / "programqpc.bin").is_file()


@pytest.mark.parametrize(
    "flags, reason",
    [
        (["-aic-num-cores=17"], "-aic-num-cores=17"),
        (["-ols=0"], "-ols=0"),
        (["-aic-num-cores=4", "-mos=1,2"], "-mos entries"),
        (["-aic-num-cores=4", "-mos=5"], "exceeds"),
        (["-aic-num-cores=4", "-sdp-cluster-sizes=2,3", "-mos=1,1"], "-sdp-cluster-sizes"),
        (["-aic-num-cores=4", "-sdp-cluster-sizes=2,2", "-mos=1,3"], "exceeds"),
    ],
)
def test_exec_option_errors(tmp_path: Path, model: Path, flags: list[str], reason: str) -> None:
    res = run(QAIC_EXEC, f"-m={model}", *flags, "-aic-binary-dir=out", cwd=tmp_path)
    assert res.returncode == 1
    block = res.stderr.splitlines()
    assert block[0] == "QAIC_ERROR:"
    assert block[1].startswith("Error message:  ") and reason in block[1]
    assert block[2].startswith("QAICException:")
    assert not (tmp_path / "out").exists()


def test_exec_model_missing_vtcm_and_nonempty_dir(tmp_path: Path, model: Path) -> None:
    res = run(QAIC_EXEC, "-m=missing.onnx", cwd=tmp_path)
    assert res.returncode == 1
    assert re.search(r"^QAIC_ERROR:\nError message:  .*missing\.onnx.*\nQAICException:\S",
                     res.stderr, re.M)
    retina = tmp_path / "retinanet.onnx"
    retina.write_bytes(b"x" * 100)
    res = run(QAIC_EXEC, f"-m={retina}", "-onnx-define-symbol=batch_size,16", "-quantization-precision=Int8",
              "-aic-binary-dir=big", cwd=tmp_path)
    assert res.returncode == 1 and "VTCM" in res.stderr
    assert "Compile started" in res.stdout
    assert not (tmp_path / "big" / "programqpc.bin").exists()
    compile_qpc(model, tmp_path, "q")
    res = run(QAIC_EXEC, f"-m={model}", f"-aic-binary-dir={tmp_path / 'q'}", cwd=tmp_path)
    assert res.returncode == 1 and "QAIC_ERROR:" in res.stderr and "not empty" in res.stderr


def test_exec_hang_can_be_killed(tmp_path: Path, model: Path) -> None:
    env = {**os.environ, "QAIC_EMU_COMPILE_HANG": "1"}
    proc = subprocess.Popen([str(QAIC_EXEC), f"-m={model}", "-aic-binary-dir=h"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("Reading ONNX Model from")
        assert proc.stdout.readline().startswith("Compile started")
        time.sleep(0.2)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
    assert not (tmp_path / "h" / "programqpc.bin").exists()


def test_runner_stats_and_identity(tmp_path: Path, model: Path) -> None:
    qpc = compile_qpc(model, tmp_path, "q", "-aic-num-cores=2", "-batchsize=4",
                      "-stats-batchsize=4", "-ols=2")
    res = run(QAIC_RUNNER, "-t", str(qpc), "-a", "3", "-S", "8", "-n", "50", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[-3] == "Using bounded random inputs"
    assert lines[-2] == " ---- Stats ----"
    m = STATS_RE.search(res.stdout)
    assert m, res.stdout
    cnt, dur, bs, ips = int(m[1]), int(m[2]), int(m[3]), m[4]
    assert cnt == 150 and bs == 4
    assert ips == f"{cnt * 1e6 / dur * bs:.3f}"
    # --time reports the nominal duration; long options with '='
    res = run(QAIC_RUNNER, f"--test-data={qpc}", "--time", "5", "--aic-device-id=0", "-v",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    m = STATS_RE.search(res.stdout)
    assert m and int(m[2]) == 5_000_000
    assert res.stdout.index("Using bounded random inputs") > 0  # verbose lines come first
    # throughput matches the model within noise
    profile = pm.resolve_profile(pm.profile_for_model(str(model)), model.stat().st_size)
    rate = pm.throughput(profile, {"cores": 2, "ols": 2, "batch": 4, "precision": "fp16"}, 1, 10, 16)
    assert abs(float(m[4]) / rate - 1) < 0.06


def test_runner_without_stats_batchsize_reports_batch_1(tmp_path: Path, model: Path) -> None:
    qpc = compile_qpc(model, tmp_path, "q", "-batchsize=8")
    res = run(QAIC_RUNNER, "-t", str(qpc), "-i", str(model), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Using bounded random inputs" not in res.stdout
    m = STATS_RE.search(res.stdout)
    assert m and m[3] == "1"


def test_runner_seed_determinism_and_noise_between_repeated_runs(tmp_path: Path, model: Path) -> None:
    qpc = compile_qpc(model, tmp_path, "q", "-aic-num-cores=4")
    twin = compile_qpc(model, tmp_path, "twin", "-aic-num-cores=4")
    a = run(QAIC_RUNNER, "-t", str(qpc), "--time", "2", cwd=tmp_path, QAIC_EMU_SEED="7")
    b = run(QAIC_RUNNER, "-t", str(twin), "--time", "2", cwd=tmp_path, QAIC_EMU_SEED="7")
    again = run(QAIC_RUNNER, "-t", str(qpc), "--time", "2", cwd=tmp_path, QAIC_EMU_SEED="7")
    c = run(QAIC_RUNNER, "-t", str(twin), "--time", "2", cwd=tmp_path, QAIC_EMU_SEED="8")
    assert a.returncode == b.returncode == again.returncode == c.returncode == 0
    assert a.stdout == b.stdout  # same seed, same QPC, first run of each: the same figures
    assert again.stdout != a.stdout  # a repeated run differs by the noise, as a card's does
    assert a.stdout != c.stdout


def test_runner_latency_files(tmp_path: Path, model: Path) -> None:
    qpc = compile_qpc(model, tmp_path, "q", "-batchsize=2", "-stats-batchsize=2")
    out = tmp_path / "prof"
    res = run(QAIC_RUNNER, "-t", str(qpc), "-a", "2", "-S", "4", "-n", "30",
              "--aic-profiling-type", "latency", "--aic-profiling-out-dir", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for n in (0, 1):
        lines = (out / f"aic-profiling-program-{n}-latency.txt").read_text().splitlines()
        assert lines[4] == LATENCY_HEADER
        assert not any("," in line for line in lines[:4])
        rows = [[float(v) for v in line.split(",")] for line in lines[5:]]
        assert len(rows) == 30  # min(executions per activation, 1000)
        for row in rows:
            assert len(row) == 9
            assert row[8] >= row[0] >= row[4] > 0
    assert not (out / "aic-profiling-program-2-latency.txt").exists()
    res = run(QAIC_RUNNER, "-t", str(qpc), "--aic-profiling-type", "latency",
              "--aic-profiling-num-samples", "7", cwd=tmp_path)
    assert res.returncode == 0
    text = (tmp_path / "aic-profiling-program-0-latency.txt").read_text().splitlines()
    assert len(text) == 5 + 7


def test_runner_activation_failures(tmp_path: Path, model: Path) -> None:
    qpc = compile_qpc(model, tmp_path, "q", "-aic-num-cores=4")
    res = run(QAIC_RUNNER, "-t", str(qpc), "-a", "4", "-n", "1", cwd=tmp_path, QAIC_EMU_NSP="14")
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and all(ERROR_LINE_RE.match(line) for line in lines)
    assert lines[0].endswith("[QKmdDevice][activate:#1172] Device 0 activate failed: "
                             "Failed to allocate NSP resources")
    assert lines[1].endswith("[QRuntime][activateNetwork:#333] Dev 0 activate failed status 300")
    assert run(QAIC_RUNNER, "-t", str(qpc), "-a", "4", "-n", "1", cwd=tmp_path).returncode == 0
    retina = tmp_path / "retinanet.onnx"
    retina.write_bytes(b"x" * 100)
    rq = compile_qpc(retina, tmp_path, "r", "-aic-enable-depth-first", "-quantization-precision=Int8")
    res = run(QAIC_RUNNER, "-t", str(rq), "-S", "5000", "-n", "1", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.splitlines()[0].endswith("Device 0 activate failed: Memory resource exhausted")


def test_runner_device_and_qpc_errors(tmp_path: Path, model: Path) -> None:
    qpc = compile_qpc(model, tmp_path, "q")
    res = run(QAIC_RUNNER, "-t", str(qpc), "-d", "1", cwd=tmp_path)
    assert res.returncode == 1 and "Invalid device:1" in res.stderr
    res = run(QAIC_RUNNER, "-t", str(qpc), "-d", "1", cwd=tmp_path,
              QAIC_EMU_DEVICES="Ready,Error")
    assert res.returncode == 1 and "Device:1 not in ready state" in res.stderr
    res = run(QAIC_RUNNER, "-t", str(qpc), "-d", "0", cwd=tmp_path,
              QAIC_EMU_DEVICES="Initializing")
    assert res.returncode == 1 and "Device:0 not in ready state" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run(QAIC_RUNNER, "-t", str(tmp_path / "empty"), cwd=tmp_path)
    assert res.returncode == 1 and "Failed to initialize QAIC runner" in res.stderr
    res = run(QAIC_RUNNER, "-t", str(qpc), "--no-such-flag", cwd=tmp_path)
    assert res.returncode == 1


def test_qaic_util(tmp_path: Path) -> None:
    res = run(QAIC_UTIL, "-q", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stdout == (
        "Number of devices: 1\nQID 0\n\tStatus:Ready\n\tPCI Address:0002:01:00.0\n"
        "\tHW Version:0.2.0.0\n\tDram Total:32616 MB\n\tDram Free:32616 MB\n\tNsp Total:16\n"
        "\tNsp Free:16\n\tNetworks Loaded:0\n\tNetworks Active:0\n\tSku Type:PCIe Pro\n")
    res = run(QAIC_UTIL, "-q", cwd=tmp_path, QAIC_EMU_NSP="14", QAIC_EMU_DEVICES="Ready,Error")
    blocks = re.split(r"^QID \d+$", res.stdout, flags=re.M)
    assert blocks[0] == "Number of devices: 2\n" and len(blocks) == 3
    assert "\tStatus:Error\n" in blocks[2] and "\tNsp Total:14\n" in blocks[1]
    assert "\tSku Type:PCIe Standard\n" in blocks[1]
    res = run(QAIC_UTIL, "-q", cwd=tmp_path, QAIC_EMU_NSP="8")
    assert "\tSku Type:AEDK\n" in res.stdout
    assert run(QAIC_UTIL, cwd=tmp_path).returncode == 1
    assert run(QAIC_UTIL, "-x", cwd=tmp_path).returncode == 1


# --------------------------------------------------------------------------------- perf model

def cfg(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"cores": 1, "ols": 1, "mos": [1], "clusters": None, "batch": 1,
                               "multicast": False, "depth_first": False}
    base.update(kw)
    if base["clusters"] is None:
        base["clusters"] = [base["cores"]]
    return base


def test_profiles_by_name() -> None:
    assert pm.profile_for_model("/x/RetinaNet_800.onnx") == "retinanet"
    assert pm.profile_for_model("bert-99.onnx") == "bert"
    assert pm.profile_for_model("resnet-50_onnx/model.onnx") == "generic"
    assert pm.profile_for_model("ResNet50.onnx") == "resnet50"
    assert set(pm.PROFILES) == {"resnet50", "retinanet", "bert", "generic"}
    assert pm.generic_profile(50_000_000).work_us > pm.generic_profile(1_000_000).work_us


def test_cores_help_with_diminishing_returns() -> None:
    for model in ("resnet50", "bert"):
        speed = [pm.throughput(model, cfg(cores=c, mos=[c], batch=4), 1, 10, 16)
                 for c in (1, 2, 4, 8, 16)]
        assert all(b > a for a, b in zip(speed, speed[1:])), (model, speed)
        gains = [b / a for a, b in zip(speed, speed[1:])]
        assert gains[0] > gains[-1], (model, gains)
        assert speed[-1] < 16 * speed[0] * 0.8


def test_batch_and_mos_interplay() -> None:
    # resnet50: batch amortises overhead, but a large batch with mos=1 spills VTCM and slows down
    tp = {b: pm.throughput("resnet50", cfg(cores=2, batch=b), 8, 10, 16) for b in (1, 8, 16)}
    assert tp[8] > tp[1] and tp[16] < tp[8]
    assert pm.throughput("resnet50", cfg(cores=2, mos=[2], batch=16), 8, 10, 16) > tp[16]
    # retinanet: too large a batch with mos=1 does not compile, and the reason names VTCM
    reason = pm.compile_check("retinanet", cfg(batch=16))
    assert reason and "VTCM" in reason
    assert pm.compile_check("retinanet", cfg(batch=1, depth_first=True)) is None


def test_activation_rules_and_set_size() -> None:
    c = cfg(cores=4)
    assert pm.activation_check("resnet50", c, 4, 10, 16) is None
    assert pm.activation_check("resnet50", c, 4, 10, 14) == "Failed to allocate NSP resources"
    assert pm.activation_check("retinanet", cfg(), 1, 5000, 16) == "Memory resource exhausted"
    one = pm.throughput("resnet50", cfg(cores=2, batch=8), 1, 10, 16)
    seven = pm.throughput("resnet50", cfg(cores=2, batch=8), 7, 10, 16)
    assert 5.5 * one < seven <= 7 * one
    by_s = [pm.throughput("resnet50", cfg(cores=2, batch=8), 7, s, 16) for s in (1, 2, 4, 8)]
    assert by_s[0] < 0.9 * by_s[3] and by_s[1] < by_s[2] < by_s[3]


def test_presets_are_good_but_beatable() -> None:
    preset = cfg(cores=4, clusters=[2, 2], mos=[1, 2], ols=4, batch=8, multicast=True)
    ref = pm.throughput("resnet50", preset, 4, 10, 16)
    assert 18_000 < ref < 26_000
    better = pm.throughput("resnet50", cfg(cores=2, mos=[2], ols=2, batch=16, multicast=True),
                           8, 8, 16)
    assert better > 1.03 * ref
    assert pm.exec_latency_us("resnet50", preset) > 0


def test_the_family_of_surfaces_is_deterministic_per_index_and_within_the_public_shapes() -> None:
    family = [pm.surface(i) for i in range(pm.SURFACES)]
    assert family == [pm.surface(i) for i in range(pm.SURFACES)]  # the same index, the same surface
    assert len({repr(s.card) for s in family}) == pm.SURFACES == 300
    assert len({repr(s.profile._replace(name="")) for s in family}) == pm.SURFACES  # each draws its own numbers
    held_out = [pm.HELD_OUT, pm.FRESH_HELD_OUT, pm.THIRD_HELD_OUT, pm.FOURTH_HELD_OUT, pm.FIFTH_HELD_OUT,
                pm.SIXTH_HELD_OUT, pm.SEVENTH_HELD_OUT, pm.EIGHTH_HELD_OUT, pm.NINTH_HELD_OUT]
    assert [len(one) for one in held_out] == [10] * 8 + [100]  # eight sets of 10 and one of 100 ...
    assert sum(map(len, held_out)) == len(frozenset().union(*held_out)) == 180  # ... that do not overlap
    tuning = pm.TUNING | pm.MORE_TUNING
    assert len(tuning) == 120 and not tuning & frozenset().union(*held_out)
    assert tuning | frozenset().union(*held_out) == frozenset(range(pm.SURFACES))
    for s in family:
        base = pm.PROFILES[("resnet50", "retinanet", "bert")[s.index % 3]]
        for name, (lo, hi) in pm._PERTURB.items():
            if name not in ("df_act", "dup_frac"):  # clamped below 1 after the draw
                assert lo * 0.999 <= getattr(s.profile, name) / getattr(base, name) <= hi * 1.001, (s.index, name)
        assert 0.01 <= s.noise <= 0.05
        assert s.held_out == any(s.index in one for one in held_out)


def test_the_surfaces_differ_in_where_their_optimum_lies() -> None:
    one_core_wins = small_batch_wins = 0
    for s in (pm.surface(i) for i in range(pm.SURFACES)):
        def rate(activations: int, **kw: object) -> float:
            return pm.throughput(s.profile, cfg(**kw), activations, 10, 16, s.card)
        one_core_wins += rate(16, cores=1, batch=8) > rate(1, cores=16, mos=[8], batch=8)
        small_batch_wins += rate(4, cores=4, mos=[2], batch=1) > rate(4, cores=4, mos=[2], batch=16)
    assert 0 < one_core_wins < pm.SURFACES and 0 < small_batch_wins < pm.SURFACES


def test_qaic_emu_surface_names_a_surface_of_the_family() -> None:
    assert pm.env_surface({"QAIC_EMU_SURFACE": "41"}) == pm.surface(41)
    assert pm.env_surface({}) is None and pm.env_surface({"QAIC_EMU_SURFACE": ""}) is None
    assert pm.env_surface({"QAIC_EMU_SURFACE": "300"}) is None and pm.env_surface({"QAIC_EMU_SURFACE": "x"}) is None
