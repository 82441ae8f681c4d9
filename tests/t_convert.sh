#!/bin/sh
# tools/torch2safetensors.py on the CIFAR ResNet-20 checkpoint: the result must load strictly
# into cifar_resnet20 (tests/test_safetensors --check-file) and hold the checkpoint's values.
# Skips (exit 77, counted as a skip by tests/run.sh) without torch or without $SHARED;
# REQUIRE_SHARED=1 turns a missing $SHARED into a failure.
PY=/usr/bin/python3
SHARED=${SHARED:-../shared}
BUILD=${BUILD:-build}
CKPT="$SHARED/weights/cifar-resnet/resnet20-12fca82f.th"
CHECK="$BUILD/tests/test_safetensors$EXE"
if ! [ -x "$PY" ] || ! "$PY" -c "import torch" 2>/dev/null; then
  echo "SKIP t_convert.sh: $PY has no torch"; exit 77
fi
if ! [ -f "$CKPT" ]; then
  [ "$REQUIRE_SHARED" = 1 ] && { echo "t_convert.sh: $CKPT not found (REQUIRE_SHARED=1)"; exit 1; }
  echo "SKIP t_convert.sh: $CKPT not found"; exit 77
fi
if ! [ -x "$CHECK" ]; then echo "t_convert.sh: $CHECK not built"; exit 1; fi

dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
out="$dir/resnet20.safetensors"
# the checkpoint holds non-tensor objects: refused without --trust-pickle, nothing written
if "$PY" tools/torch2safetensors.py "$CKPT" "$out" 2> "$dir/refused.log"; then
  echo "full unpickling without --trust-pickle"; exit 1
fi
grep -q -- "--trust-pickle" "$dir/refused.log" || { cat "$dir/refused.log"; echo "no hint at --trust-pickle"; exit 1; }
[ -e "$out" ] && { echo "refused conversion left output behind"; exit 1; }
"$PY" tools/torch2safetensors.py --trust-pickle "$CKPT" "$out" || { echo "conversion failed"; exit 1; }
$RUNNER "$CHECK" --check-file "$out" cifar_resnet20 10 || { echo "strict load failed"; exit 1; }

# the values are the checkpoint's, bit for bit, and the layout is the spec's
"$PY" - "$CKPT" "$out" <<'EOF' || { echo "value check failed"; exit 1; }
import json, struct, sys, numpy as np, torch
ckpt, out = sys.argv[1], sys.argv[2]
sd = torch.load(ckpt, map_location="cpu")["state_dict"]
raw = open(out, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
assert (8 + n) % 8 == 0, "header not padded to 8 bytes"
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
names = [k for k in header if k != "__metadata__"]
assert len(names) == len(sd), (len(names), len(sd))
for k, v in sd.items():
    e = header[k[len("module."):]]
    b, t = e["data_offsets"]
    got = np.frombuffer(data[b:t], dtype="<f4").reshape(e["shape"])
    assert np.array_equal(got, v.numpy()), k
print(f"{len(names)} tensors match the checkpoint")
EOF

# a file that is not a checkpoint fails cleanly and leaves no output behind
echo "not a checkpoint" > "$dir/bad.th"
if "$PY" tools/torch2safetensors.py --trust-pickle "$dir/bad.th" "$dir/bad.safetensors" 2>/dev/null; then
  echo "accepted a bad checkpoint"; exit 1
fi
if ls "$dir" | grep -q "bad.safetensors"; then echo "left output behind"; exit 1; fi
exit 0
