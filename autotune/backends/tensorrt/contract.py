"""The two trtexec contracts (TRTEXEC-FACTS): TensorRT 10.x and 11.x differ in flags and defaults, so every command
line is spelled in the one contract the installed trtexec's version selects, never a mix of both."""

from __future__ import annotations

from dataclasses import dataclass

from autotune.errors import AutotuneError

PRECISION_FLAGS_10 = ("--fp16", "--bf16", "--int8", "--fp8", "--best")
REMOVED_IN_10 = ("--workspace",)  # removed in 10.0: --memPoolSize=workspace:N instead
REMOVED_IN_11 = (*PRECISION_FLAGS_10, "--int4")


@dataclass(frozen=True, kw_only=True)
class Version:
    """A TensorRT version, as ``[TensorRT v110100]`` spells it (major * 10000 + minor * 100 + patch)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def from_tag(cls, digits: int) -> Version:
        return cls(major=digits // 10000, minor=digits // 100 % 100, patch=digits % 100)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True, kw_only=True)
class Contract:
    """What one major version of trtexec takes: its precision flags, the flags it refuses and its runtime defaults."""

    major: int
    precision_flags: tuple[str, ...]
    removed: tuple[str, ...]
    cuda_graph_default: bool
    spin_wait_default: bool
    transfers_default: bool

    def runtime_flags(self, *, cuda_graph: bool, spin_wait: bool, transfers: bool = True) -> list[str]:
        """The flags that set CUDA graph, spin wait and data transfers as asked, in this contract's spelling
        (nothing for a setting at this version's default)."""
        flags = []
        if cuda_graph != self.cuda_graph_default:
            flags.append("--useCudaGraph" if cuda_graph else "--noCudaGraph")
        if spin_wait != self.spin_wait_default:
            flags.append("--useSpinWait" if spin_wait else "--noSpinWait")
        if transfers != self.transfers_default:
            flags.append("--includeDataTransfers" if transfers else "--noDataTransfers")
        return flags

    def runtime_switches(self) -> dict[str, tuple[str, bool]]:
        """Each runtime switch flag this contract takes: flag -> (setting, value it sets)."""
        if self.major == 10:
            return {"--useCudaGraph": ("cuda_graph", True), "--useSpinWait": ("spin_wait", True)}
        return {"--noCudaGraph": ("cuda_graph", False), "--noSpinWait": ("spin_wait", False),
                "--useCudaGraph": ("cuda_graph", True), "--useSpinWait": ("spin_wait", True)}

    def refusal(self, flag: str) -> str | None:
        """Why this contract refuses ``flag`` (a removed or other-version flag), or None."""
        name = flag.partition("=")[0]
        if name == "--workspace":
            return (f"{flag} was removed in TensorRT 10.0; the workspace is --memPoolSize=workspace:N, a searched "
                    f"knob")
        if name in self.removed:
            return (f"{name} was removed in TensorRT 11 (weak typing is gone): precision is a property of the ONNX "
                    f"file on 11.x; convert the model instead: autotune searches its fp16 and int8 QDQ variants "
                    f"(precision=fp16, precision=int8; docs/targets/tensorrt.md, 'Precision on TensorRT')")
        if self.major == 10 and name in ("--noCudaGraph", "--noSpinWait", "--includeDataTransfers"):
            return f"{name} is TensorRT 11's spelling; TensorRT {self.major}.x does not take it"
        return None


CONTRACTS = {
    10: Contract(major=10, precision_flags=PRECISION_FLAGS_10, removed=REMOVED_IN_10, cuda_graph_default=False,
                 spin_wait_default=False, transfers_default=True),
    11: Contract(major=11, precision_flags=(), removed=REMOVED_IN_10 + REMOVED_IN_11, cuda_graph_default=True,
                 spin_wait_default=True, transfers_default=False),
}


def contract_for(version: Version) -> Contract:
    """The contract of ``version``; a version autotune has no contract for is refused."""
    if version.major not in CONTRACTS:
        known = ", ".join(f"{major}.x" for major in CONTRACTS)
        raise AutotuneError(f"trtexec reports TensorRT {version}; autotune knows the trtexec contracts of {known} "
                            f"only: point --trtexec at a TensorRT 10 or 11 trtexec")
    return CONTRACTS[version.major]
