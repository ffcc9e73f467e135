#!/usr/bin/env bash
# The peers' environments, apart from unitune's own .venv (their pins conflict with it and with
# each other). Each gets CPU torch first, installed alone, and a constraint that keeps it there, so
# pip can never replace it with a multi-GB CUDA build:
#
#   bench/.venv-peers   TRL 1.16 with the same transformers / peft / accelerate as unitune's .venv
#   bench/.venv-swift   ms-swift 4.6 (needs transformers < 5.20 and trl < 1.0)
#   bench/.venv-lf      LLaMA-Factory 0.9.5 (needs transformers <= 5.6, trl <= 0.24, peft <= 0.18.1), without
#                       torchvision / torchaudio (see below)
#
# Usage: bash bench/setup_peers.sh [trl] [swift] [lf]     (default: all three; each is idempotent)
# A peer that fails to install is reported and skipped; bench/run.py skips a peer whose venv lacks it.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
TORCH=2.13.0
# unitune's own versions, so that TRL runs on the same transformers as unitune
UT=.venv/bin/python
TF=$($UT -c "import transformers; print(transformers.__version__)" 2>/dev/null || echo 5.24.0)
PEFT=$($UT -c "import peft; print(peft.__version__)" 2>/dev/null || echo 0.21.2)
ACC=$($UT -c "import accelerate; print(accelerate.__version__)" 2>/dev/null || echo 1.15.0)
LOG=bench/.setup-logs
mkdir -p "$LOG"

make_venv() {  # make_venv DIR: a venv with CPU torch, and a constraints file pinning it
    local dir=$1
    test -x "$dir/bin/python" || $PY -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
    printf 'torch==%s+cpu\n' "$TORCH" > "$dir/constraints.txt"
    "$dir/bin/python" -c "import torch" 2>/dev/null \
        || "$dir/bin/python" -m pip install -q -c "$dir/constraints.txt" "torch==$TORCH"
}

install() {  # install NAME DIR EXTRA_CONSTRAINTS... -- PACKAGES...
    local name=$1 dir=$2; shift 2
    local cons=()
    while [ "$1" != "--" ]; do cons+=("$1"); shift; done; shift
    echo "== $name -> $dir"
    make_venv "$dir" || { echo "!! $name: could not create $dir"; return 1; }
    for c in "${cons[@]}"; do echo "$c" >> "$dir/constraints.txt"; done
    if "$dir/bin/python" -m pip install -c "$dir/constraints.txt" "$@" psutil > "$LOG/$name.log" 2>&1; then
        "$dir/bin/python" -c "import torch, transformers; assert not torch.version.cuda, 'a CUDA torch'; \
print('   torch', torch.__version__, 'transformers', transformers.__version__)"
        "$dir/bin/pip" freeze > "$LOG/$name.freeze.txt"
        echo "   ok ($LOG/$name.freeze.txt)"
    else
        echo "!! $name did not install; the last lines of $LOG/$name.log:"
        tail -n 15 "$LOG/$name.log" | sed 's/^/   /'
        return 1
    fi
}

want=${*:-trl swift lf}
status=0
for peer in $want; do
    case $peer in
        trl)   install trl bench/.venv-peers "transformers==$TF" "peft==$PEFT" "accelerate==$ACC" -- \
                   "trl==1.16.*" "transformers==$TF" "peft==$PEFT" "accelerate==$ACC" || status=1 ;;
        swift) install swift bench/.venv-swift -- "ms-swift==4.6.*" || status=1 ;;
        lf)    install lf bench/.venv-lf -- "llamafactory==0.9.5" || status=1
               # PyPI's torchvision / torchaudio for torch 2.13 are CUDA builds that fail to load next to CPU
               # torch ("operator torchvision::nms does not exist"), and transformers then fails to import:
               # remove them (LLaMA-Factory needs them for image/audio inputs only; lf_run.py stubs torchaudio)
               bench/.venv-lf/bin/python -m pip uninstall -q -y torchvision torchaudio ;;
        *) echo "unknown peer $peer (trl, swift, lf)"; status=2 ;;
    esac
done
exit $status
