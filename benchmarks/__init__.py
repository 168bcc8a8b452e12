"""LMPC benchmarks: each module is one command (`python -m benchmarks.<name>`) writing JSON + Markdown
into benchmarks/results/. Timings are only compared within one run, as ratios."""
