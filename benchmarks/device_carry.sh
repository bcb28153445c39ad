#!/usr/bin/env bash
# Builds here what benchmarks/device_setup.sh expects carried to a lent GPU machine (it has no network):
#   .whl/        wheels its image lacks, for its Python 3.12, at the versions this .venv runs (pydantic and what
#                it needs, gguf, xgrammar and apache-tvm-ffi); nothing it already has (numpy, torch, transformers,
#                ...), which a carried copy would shadow
#   .devcarry/   the second half of the SmolLM2 GGUF (the whole file is more than one call may carry), the Azure
#                conversation trace and a tokenizer-only GGUF (all random-weight runs need of it)
#   .devcarry1/  the first half, with the same trace and tokenizer-only GGUF (so either call can set up alone)
# All three are ignored by git. The device calls then carry [".whl", ".devcarry1"] with CARRY=.devcarry1 first
# (it stashes the first half) and [".whl", ".devcarry"] after, on the same warm machine (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in .whl .devcarry .devcarry1; do
    grep -qx "/$dir/" .git/info/exclude 2>/dev/null || echo "/$dir/" >> .git/info/exclude
    rm -rf "$dir" && mkdir -p "$dir"
done
py=.venv/bin/python
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
pins=()
for name in pydantic pydantic-core annotated-types typing-inspection gguf xgrammar apache-tvm-ffi; do pins+=("$name==$(version "$name")"); done
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${pins[@]}"
gguf_file=$("$py" -c "from fleetserve.engine import loader; print(loader.builtin_dir())")/SmolLM2-135M-Instruct.Q4_1.gguf
split -n 2 "$gguf_file" .devcarry1/gguf.part-
mv .devcarry1/gguf.part-ab .devcarry/
cp ../shared/data/azure-llm-2023/conv.csv .devcarry/
"$py" - "$gguf_file" .devcarry/tokenizer-only.gguf <<'EOF'
"""Every metadata field of the GGUF (tokenizer and config), no tensors."""
import sys

import gguf

reader = gguf.GGUFReader(sys.argv[1])
writer = gguf.GGUFWriter(sys.argv[2], arch=reader.fields["general.architecture"].contents())
for name, field in reader.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":  # written by the writer itself
        continue
    array = field.types[0] == gguf.GGUFValueType.ARRAY
    writer.add_key_value(name, field.contents(), field.types[0], sub_type=field.types[-1] if array else None)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.close()
EOF
cp .devcarry/conv.csv .devcarry/tokenizer-only.gguf .devcarry1/
du -sh .whl .devcarry .devcarry1
