"""The machines a game developer asks about, as benchmark profiles.

- `cpu-only`: a desktop without a usable GPU: 2 and 4 onnxruntime threads, and the whole process
  (model loaded and talking) must stay under a 2 GB RAM ceiling.
- `low-end`: an old laptop or handheld: one thread, same ceiling.
- `gtx1060`: a GTX-1060-class gaming PC: the CUDA execution provider with a 6 GB device-memory cap.
  It runs only where onnxruntime-gpu and an NVIDIA GPU are both present *and* the engine can use them;
  otherwise the profile is reported with the reason and the CPU numbers stand in for it (`fallback`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import machine


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    threads: tuple[int, ...]
    rss_ceiling_mb: float | None = None
    provider: str = "CPUExecutionProvider"
    device_memory_mb: float | None = None


PROFILES = {
    "cpu-only": Profile("cpu-only", "desktop CPU, no GPU", threads=(2, 4), rss_ceiling_mb=2048),
    "low-end": Profile("low-end", "one core to spare", threads=(1,), rss_ceiling_mb=2048),
    "gtx1060": Profile("gtx1060", "GTX-1060-class GPU, 6 GB", threads=(2,), rss_ceiling_mb=2048,
                       provider="CUDAExecutionProvider", device_memory_mb=6144),
}

# Why the gtx1060 profile cannot run on the GPU even where there is one: the fast engine binds its KV
# pool to the session by host address (IO binding of CPU memory), so today it runs on CPU only.
ENGINE_GPU_LIMIT = "LMPC's engine runs on the CPU only (its in-place KV pool is bound by host memory address)"


def availability(profile: Profile, info: dict) -> tuple[str, str]:
    """('run', '') when the profile can be measured as specified, else ('fallback', why) for a GPU profile
    that falls back to measuring on the CPU."""
    if profile.provider == "CPUExecutionProvider":
        return "run", ""
    missing = []
    if profile.provider not in info["onnxruntime_providers"]:
        missing.append(f"onnxruntime has no {profile.provider} (onnxruntime-gpu not installed)")
    if not info["gpus"]:
        missing.append("no NVIDIA GPU found (nvidia-smi)")
    else:
        small = [g for g in info["gpus"] if g["memory_mb"] < (profile.device_memory_mb or 0)]
        if len(small) == len(info["gpus"]):
            missing.append(f"no GPU with {profile.device_memory_mb:.0f} MB")
    missing.append(ENGINE_GPU_LIMIT)
    return "fallback", "; ".join(missing) + "; measured on the CPU instead"


def resolve(names: list[str]) -> list[Profile]:
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise SystemExit(f"unknown profile(s) {', '.join(unknown)}; choose from {', '.join(PROFILES)}")
    return [PROFILES[n] for n in names]


def describe(profile: Profile, info: dict | None = None) -> dict:
    status, reason = availability(profile, info or machine.describe())
    return {"name": profile.name, "summary": profile.summary, "threads": list(profile.threads),
            "rss_ceiling_mb": profile.rss_ceiling_mb, "provider": profile.provider,
            "device_memory_mb": profile.device_memory_mb, "status": status, "reason": reason}
