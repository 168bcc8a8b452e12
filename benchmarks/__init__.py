"""LMPC benchmarks: `python -m benchmarks` is the harness (harness.py); each other module is also one command
(`python -m benchmarks.<name>`) writing JSON + Markdown into benchmarks/results/. Timings are only compared
within one run, as ratios."""

import os

# OpenMP worker threads (llama.cpp, torch) busy-wait between steps by default. On a machine shared with other
# jobs that collapses them (llama.cpp at 2 threads measured 0.8 tok/s spinning, 19 passive, here); our
# onnxruntime sessions do not spin either (EngineOptions). Set before any OpenMP runtime starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
