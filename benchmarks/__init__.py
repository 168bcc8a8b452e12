"""LMPC benchmarks: `python -m benchmarks` is the harness (harness.py); each other module is also one command
(`python -m benchmarks.<name>`) writing JSON + Markdown into benchmarks/results/. Timings are only compared
within one run, as ratios."""
