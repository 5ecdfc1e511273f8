"""What the speed benchmarks share: the device's name, the ways of running a training step, and the peak memory of
a stretch of work.

On CUDA the peak is the caching allocator's (``torch.cuda.max_memory_allocated``). On a CPU, torch's tensors are
invisible to tracemalloc, so the proxy is the operating system's count of the process's resident memory: its
high-water mark (VmHWM in /proc/self/status, reset through /proc/self/clear_refs) less the resident size at the
baseline. Without /proc (not Linux) it falls back to ``resource.getrusage``'s peak of the whole process, with
no baseline and no reset.
"""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

import torch

MIB = 2**20
# The ways aekit's trainer can run a step, named as its command-line flags, as TrainSettings options: torch.compile,
# CUDA graphs captured by hand (CUDA only), both (torch.compile's kernels captured by hand), or eagerly.
STEPS = {
    "compile": {"compile": True},
    "cuda-graph": {"cuda_graph": True},
    "compile+cuda-graph": {"compile": True, "cuda_graph": True},
    "eager": {},
}
_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    # platform.machine(), not processor(): the latter runs `uname -p` in a process on Linux.
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


class PeakMemory:
    """Bytes held at the peak of a stretch of work above those held at the baseline (when it was made).

    ``reset()`` forgets the peak reached so far (e.g. while reading files) but keeps the baseline, so what was
    allocated since the baseline and is still held counts, and transients before the reset do not.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.proc = _STATUS.exists() and _CLEAR_REFS.exists()
        if self.cuda:
            self.how = "torch.cuda.max_memory_allocated"
        elif self.proc:
            self.how = "process resident-set high-water mark (/proc VmHWM, reset before the work)"
        else:
            self.how = "whole-process peak resident set (resource.getrusage: no baseline, no reset)"
        self.baseline = self._current()
        self.reset()

    def _current(self) -> int:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        return _status_bytes("VmRSS") if self.proc else 0

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.proc:
            _CLEAR_REFS.write_text("5")  # 5: reset the resident-set high-water mark to the current size

    def growth(self) -> int:
        """The peak since the last reset, less the baseline."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.baseline
        if self.proc:
            return _status_bytes("VmHWM") - self.baseline
        import resource

        # ru_maxrss is in bytes on macOS, in KiB elsewhere.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _status_bytes(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.M).group(1)) * 1024
