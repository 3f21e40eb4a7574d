#!/usr/bin/env bash
# The CPU-first CIFAR-10 recipe of the built-in `cifar10` model (issue 9), as it was run; see varlite/weights/cifar10.md.
#
#   bash recipes/cifar10.sh judge|tokenizer|encode|ablation|long|evaluate|export
#
# Run dirs live outside the work tree, under $VARLITE_HOME/runs/cifar10 (default ~/.cache/varlite/runs/cifar10), so a
# later sitting on the same machine resumes them exactly (every command resumes where it stopped when run again).
# DATA: the CIFAR-10 python tarball (python -m varlite download cifar10 puts it in the cache).
set -euo pipefail
HOME_DIR=${VARLITE_HOME:-$HOME/.cache/varlite}
R=${RUNS:-$HOME_DIR/runs/cifar10}
DATA=${DATA:-$HOME_DIR/cifar10/cifar-10-python.tar.gz}
PY=${PY:-python}
DATASET="--dataset cifar10 --data-root $DATA"
COMMON="$DATASET --precision bf16 --threads ${THREADS:-2} --device ${DEVICE:-auto}"   # DEVICE=cuda on a GPU machine
ABLATION_SECONDS=${ABLATION_SECONDS:-360}      # equal budget per candidate: 6 wall-minutes on 2 cores

# steps of each candidate's full schedule (about 65 minutes of an idle 2-core CPU each) and its learning rate
declare -A STEPS=([cifar10-s]=6000 [cifar10-m]=2800 [cifar10-l]=900)
declare -A LR=([cifar10-s]=1e-3 [cifar10-m]=8e-4 [cifar10-l]=6e-4)
declare -A EVAL=([cifar10-s]=500 [cifar10-m]=250 [cifar10-l]=100)

var_cmd() {   # var_cmd PRESET [extra options]: the train-var command of one candidate
    local p=$1; shift
    echo $PY -m varlite train-var --run-dir $R/var-${p#cifar10-} --preset $p --tokenizer $R/tokenizer $COMMON \
        --batch-size 64 --lr ${LR[$p]} --warmup-steps 200 --hflip --steps ${STEPS[$p]} --eval-every ${EVAL[$p]} \
        --eval-images 1000 --sample-every 0 --samples-per-class 10 --sample-cfg 3 --judge $R/judge \
        --judge-per-class 20 --ckpt-every 50 "$@"
}

case "${1:-}" in
judge)       # the judging classifier: DeepCNN, 10 epochs
    $PY -m varlite train-classifier --run-dir $R/judge $COMMON --arch deep --hflip --translate 2 \
        --label-smoothing 0.1 --batch-size 256 --lr 3e-3 --weight-decay 0.05 --warmup-steps 100 --steps 1950 \
        --eval-every 390 --sample-every 0 --ckpt-every 200 ;;
tokenizer)   # the 8x8-latent tokenizer: 1400 steps x 64 images (1.8 epochs)
    $PY -m varlite train-tokenizer --run-dir $R/tokenizer --preset cifar10-m $COMMON --batch-size 64 --lr 1e-3 \
        --warmup-steps 100 --hflip --steps 1400 --eval-every 700 --eval-images 1000 --sample-every 700 \
        --ckpt-every 100 ;;
encode)      # the token maps of all 50,000 training images and their flips, once; shared by the candidates
    $(var_cmd cifar10-s --encode-first --stop-at 1)
    for c in m l; do mkdir -p $R/var-$c; cp $R/var-s/tokens_train.pt $R/var-$c/; done ;;
ablation)    # each candidate for ABLATION_SECONDS of training (Ctrl-C = save and stop), then the same evaluation
    for p in ${CANDIDATES:-cifar10-s cifar10-m cifar10-l}; do
        $(var_cmd $p) & pid=$!
        sleep $ABLATION_SECONDS; kill -INT $pid; wait $pid || true
        $PY -m varlite evaluate --var $R/var-${p#cifar10-} $DATASET --classifier $R/judge --per-class 20 --cfg 3 \
            --max-images 1000 --out $R/ablation-${p#cifar10-}.json
    done ;;
long)        # continue the chosen candidate (WINNER=cifar10-s|m|l) to the end of its schedule (LONG_STEPS: shorten it)
    STEPS[${WINNER:?set WINNER to the ablation winner}]=${LONG_STEPS:-${STEPS[$WINNER]}}
    $(var_cmd $WINNER) ;;
evaluate)    # 1,000 samples (100 per class, class c with seed c) at the recommended settings, judged
    $PY -m varlite evaluate --var $R/var-${WINNER#cifar10-} $DATASET --classifier $R/judge --per-class 100 \
        --batch-classes 1 --cfg ${CFG:-3} --top-k ${TOPK:-0} --top-p ${TOPP:-0} --grid $R/samples.png \
        --out $R/eval.json ;;
export)      # ship it (float16) with its recommended sampling
    $PY -m varlite export-builtin --var $R/var-${WINNER#cifar10-} --name cifar10 --preset cifar10 \
        --cfg ${CFG:-3} --top-k ${TOPK:-0} --top-p ${TOPP:-0} --storage int8 ;;
*) echo "usage: $0 judge|tokenizer|encode|ablation|long|evaluate|export" >&2; exit 2 ;;
esac
