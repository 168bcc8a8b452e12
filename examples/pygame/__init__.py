"""A small pygame game on LMPC: talk to Ser Orlando Marlo in the yard of the Tipped Lantern.

Run it from the repository root with `python -m examples.pygame` (see README.md here). Nothing in this
package imports pygame at import time, so `__main__` can choose the video driver first.
"""
