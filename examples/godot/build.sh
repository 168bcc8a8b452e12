#!/bin/sh
# Build the LMPC GDExtension for this Linux machine with the system C compiler, and put liblmpc.so
# beside it:
#
#   examples/godot/build.sh [OUT_DIR]      (default: examples/godot/addons/lmpc/bin)
#
# Environment: CC (default cc), CFLAGS (added to the defaults), LIBLMPC (the liblmpc.so to copy;
# default build/capi/liblmpc.so, built with `make capi` when missing; "none" copies nothing).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$HERE/addons/lmpc/bin}
CC=${CC:-cc}

case $(uname -m) in
    x86_64) ARCH=x86_64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) echo "build.sh: no Godot architecture name for $(uname -m)" >&2; exit 1 ;;
esac

mkdir -p "$OUT"
# -fvisibility=hidden: the entry symbol is the only one Godot needs to see.
# shellcheck disable=SC2086  # CFLAGS is a list of flags
"$CC" -std=c11 -O2 -g -Wall -Wextra -fPIC -fvisibility=hidden -shared ${CFLAGS:-} \
    -I "$REPO/bindings" "$HERE"/addons/lmpc/src/*.c -ldl -lm \
    -o "$OUT/liblmpc_godot.linux.$ARCH.so"

LIBLMPC=${LIBLMPC:-$REPO/build/capi/liblmpc.so}
if [ "$LIBLMPC" != none ]; then
    [ -f "$LIBLMPC" ] || make -C "$REPO" capi
    cp "$LIBLMPC" "$OUT/liblmpc.so"
fi
echo "built $OUT/liblmpc_godot.linux.$ARCH.so"
