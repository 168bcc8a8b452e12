"""What machine a result was measured on: CPU model and the SIMD flags that decide kernel speed, cores,
RAM, load, GPU, and the versions of the libraries timed. Recorded with every benchmark result."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

# The CPU features the int8/fp32 kernels of onnxruntime and llama.cpp dispatch on.
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                "avx512_bf16", "amx_int8", "amx_bf16", "neon", "asimddp")
LIBRARIES = ("lmpc", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai", "llama_cpp_python", "torch",
             "transformers", "numpy", "hnswlib")


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    info = _cpuinfo()
    present = set((info.get("flags") or info.get("Features") or "").split())
    return [flag for flag in KERNEL_FLAGS if flag in present]


def ram_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi lists them (name, memory in MB, driver); empty when there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.split(", ") for line in out.stdout.splitlines() if line.strip()]
    return [{"name": r[0], "memory_mb": float(r[1]), "driver": r[2]} for r in rows if len(r) == 3]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def describe() -> dict:
    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores_visible": os.cpu_count(),
        "ram_gb": round(ram_gb() or 0.0, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "gpus": gpus(),
        "onnxruntime_providers": onnxruntime_providers(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def summary_line(machine: dict) -> str:
    gpu = ", ".join(g["name"] for g in machine["gpus"]) or "no GPU"
    return (f"{machine['cpu']} ({', '.join(machine['cpu_flags']) or 'no SIMD flags read'}), "
            f"{machine['cores_visible']} cores visible, {machine['ram_gb']} GB RAM, {gpu}; "
            f"load average {machine['load_avg_1min']} at the start")
