"""LMPC's C ABI (installed as `lmpc_bindings`): the public header `lmpc.h`, the C side of the library
(`lmpc_capi.c`) and `build.py`, which compiles both with cffi in embedding mode into liblmpc.so."""
