#!/usr/bin/env bash
# The CPU-first CIFAR-10 recipe of the built-in `cifar10` model; see varlite/weights/cifar10.md.
#
#   bash recipes/cifar10.sh all                     # tokenizer, encode, transformer, evaluate, timed (timings.txt)
#   bash recipes/cifar10.sh tokenizer|encode|ablation|long|evaluate|export|judge|judge-export
#
# SCHEDULE=fast (the default): the one-CPU-hour schedule: preset cifar10-fast (the cifar10-s transformer on a ch-32
# tokenizer), 600 tokenizer steps of 64 images, 1050 transformer steps of 32 (half the batch, twice the updates:
# at 1200 steps 63.1 % class-consistency against 56.8 % for 600 of 64 on the same samples, see docs/TRAINING.md),
# token maps encoded as the transformer first meets them (no encode pass), one evaluation at the end. Run dirs in
# $VARLITE_HOME/runs/cifar10-fast. SCHEDULE=shipped: the schedule of the shipped `cifar10` model (preset cifar10-s on
# the ch-64 tokenizer, 1400 + 2800 steps, about 3 CPU-hours on an AMX CPU, 5 on an AVX2 one); run dirs in
# $VARLITE_HOME/runs/cifar10.
# Run dirs live outside the work tree (default ~/.cache/varlite/runs/...), so a later sitting on the same machine
# resumes them exactly (every command resumes where it stopped when run again).
# DATA: the CIFAR-10 python tarball (python -m varlite download cifar10 puts it in the cache).
# DEVICE=cuda runs every stage on a GPU (PRECISION=auto then uses bfloat16 there); THREADS sets the CPU threads.
# JUDGE: the classifier that measures class-consistency; by default the judge shipped with varlite
# (builtin:cifar10, evaluation only), so the recipe trains no judge. `judge` retrains it, `judge-export` ships it.
# DRY_RUN=1: every stage with a few steps and a few images, token maps encoded as they are used (checks the whole
# pipeline in a minute, on any device; with DATASET_NAME=shapes it needs no download).
set -euo pipefail
HOME_DIR=${VARLITE_HOME:-$HOME/.cache/varlite}
SCHEDULE=${SCHEDULE:-fast}
case "$SCHEDULE" in fast) R=${RUNS:-$HOME_DIR/runs/cifar10-fast} ;; shipped) R=${RUNS:-$HOME_DIR/runs/cifar10} ;;
    *) echo "SCHEDULE must be fast or shipped, got '$SCHEDULE'" >&2; exit 2 ;; esac
DATA=${DATA:-$HOME_DIR/cifar10/cifar-10-python.tar.gz}
PY=${PY:-python}
JUDGE=${JUDGE:-builtin:cifar10}
DATASET="--dataset cifar10 --data-root $DATA"
[ "${DATASET_NAME:-cifar10}" = shapes ] && DATASET="--dataset shapes"    # the built-in synthetic data (dry runs)
COMMON="$DATASET --precision ${PRECISION:-auto} --threads ${THREADS:-2} --device ${DEVICE:-auto}"
ABLATION_SECONDS=${ABLATION_SECONDS:-360}      # equal budget per candidate: 6 wall-minutes on 2 cores

# steps of each stage (tokenizer, judge) and each candidate's schedule, its learning rate and evaluation interval
TOK_STEPS=1400; TOK_LR=1e-3; TOK_PRESET=cifar10-m; TOK_EVAL=700; JUDGE_STEPS=1950
EVAL_IMAGES=1000; PER_CLASS=100; JUDGE_PER_CLASS=20; GRID_PER_CLASS=10; ENCODE_FIRST=1
TEST_IMAGES=0                                  # evaluate: 0 = the whole test split
TOK_BATCH=64; VAR_BATCH=64; JUDGE_BATCH=256; VAR_WARMUP=200
declare -A STEPS=([cifar10-s]=2800 [cifar10-m]=2800 [cifar10-l]=900 [cifar10-fast]=1050)
declare -A LR=([cifar10-s]=1e-3 [cifar10-m]=8e-4 [cifar10-l]=6e-4 [cifar10-fast]=2e-3)
declare -A EVAL=([cifar10-s]=500 [cifar10-m]=250 [cifar10-l]=100 [cifar10-fast]=0)
WINNER=${WINNER:-cifar10-s}                    # the ablation's winner (see the model card)
if [ "$SCHEDULE" = fast ]; then
    WINNER=cifar10-fast; TOK_PRESET=cifar10-fast; TOK_STEPS=600; TOK_LR=2e-3; TOK_EVAL=0; ENCODE_FIRST=0; VAR_BATCH=32
    TEST_IMAGES=2000                           # evaluate: the first 2,000 test images (the whole split: 5 CPU-min)
    CFG=${CFG:-12}; TOPK=${TOPK:-30}           # its recommended sampling, chosen on generated samples (model card)
fi
if [ "${DRY_RUN:-0}" = 1 ]; then
    TOK_STEPS=2; JUDGE_STEPS=2; EVAL_IMAGES=20; PER_CLASS=1; JUDGE_PER_CLASS=1; GRID_PER_CLASS=1; TEST_IMAGES=20
    TOK_BATCH=8; VAR_BATCH=8; JUDGE_BATCH=8; TOK_EVAL=2; ENCODE_FIRST=0
    STEPS=([cifar10-s]=2 [cifar10-m]=2 [cifar10-l]=2 [cifar10-fast]=2)
    EVAL=([cifar10-s]=2 [cifar10-m]=2 [cifar10-l]=2 [cifar10-fast]=2)
fi
STEPS[$WINNER]=${LONG_STEPS:-${STEPS[$WINNER]}}

var_cmd() {   # var_cmd PRESET [extra options]: the train-var command of one candidate
    local p=$1; shift
    echo $PY -m varlite train-var --run-dir $R/var-${p#cifar10-} --preset $p --tokenizer $R/tokenizer $COMMON \
        --batch-size $VAR_BATCH --lr ${LR[$p]} --warmup-steps $VAR_WARMUP --hflip --steps ${STEPS[$p]} --eval-every ${EVAL[$p]} \
        --eval-images $EVAL_IMAGES --sample-every 0 --samples-per-class $GRID_PER_CLASS --sample-cfg 3 --judge $JUDGE \
        --judge-per-class $JUDGE_PER_CLASS --ckpt-every 50 "$@"
}

case "${1:-}" in
judge)       # retrain the judging classifier: DeepCNN, 10 epochs (the shipped one: builtin:cifar10)
    $PY -m varlite train-classifier --run-dir $R/judge $COMMON --arch deep --hflip --translate 2 \
        --label-smoothing 0.1 --batch-size $JUDGE_BATCH --lr 3e-3 --weight-decay 0.05 --warmup-steps 100 --steps $JUDGE_STEPS \
        --eval-every 390 --sample-every 0 --ckpt-every 200 ;;
judge-export)  # write the retrained judge as a shipped one (JUDGE_OUT, default the package's judges folder)
    $PY -m varlite export-judge --classifier $R/judge $DATASET ${JUDGE_OUT:+--out $JUDGE_OUT} ;;
tokenizer)   # the 8x8-latent tokenizer: shipped 1400 steps x 64 images (1.8 epochs), fast 600 x 64 (0.8 epoch)
    $PY -m varlite train-tokenizer --run-dir $R/tokenizer --preset $TOK_PRESET $COMMON --batch-size $TOK_BATCH \
        --lr $TOK_LR --warmup-steps 100 --hflip --steps $TOK_STEPS --eval-every $TOK_EVAL --eval-images $EVAL_IMAGES \
        --sample-every $TOK_EVAL --ckpt-every 100 ;;
encode)      # the token maps of all 50,000 training images and their flips, once; shared by the candidates
    # (the fast schedule skips it: its transformer meets fewer images than there are, each encoded when first met)
    [ "$SCHEDULE" = fast ] && [ "${DRY_RUN:-0}" != 1 ] && exit 0
    $(var_cmd $WINNER --stop-at 1 $([ "$ENCODE_FIRST" = 1 ] && echo --encode-first))
    if [ "$SCHEDULE" = shipped ]; then                   # the ablation's candidates share the token maps
        for c in s m l; do
            [ "var-$c" = "var-${WINNER#cifar10-}" ] || { mkdir -p $R/var-$c; cp $R/var-${WINNER#cifar10-}/tokens_train.pt $R/var-$c/; }
        done
    fi ;;
ablation)    # each candidate for ABLATION_SECONDS of training (Ctrl-C = save and stop), then the same evaluation
    for p in ${CANDIDATES:-cifar10-s cifar10-m cifar10-l}; do
        $(var_cmd $p) & pid=$!
        sleep $ABLATION_SECONDS; kill -INT $pid; wait $pid || true
        $PY -m varlite evaluate --var $R/var-${p#cifar10-} $DATASET --classifier $JUDGE --per-class 20 --cfg 3 \
            --max-images $EVAL_IMAGES --out $R/ablation-${p#cifar10-}.json
    done ;;
long)        # train the chosen candidate (WINNER) to the end of its schedule (LONG_STEPS: another length)
    $(var_cmd $WINNER) ;;
evaluate)    # PER_CLASS samples per class (class c with seed c) at the recommended settings, judged
    $PY -m varlite evaluate --var $R/var-${WINNER#cifar10-} $DATASET --classifier $JUDGE --per-class $PER_CLASS \
        --batch-classes 1 --cfg ${CFG:-8} --top-k ${TOPK:-100} --top-p ${TOPP:-0} --max-images $TEST_IMAGES \
        --grid $R/samples.png --out $R/eval.json ;;
export)      # ship it (int8 storage) with its recommended sampling; the fast schedule's run is used as a run dir
    [ "$SCHEDULE" = shipped ] || { echo "export writes the built-in cifar10 from SCHEDULE=shipped; a fast run is" \
        "used as it is: python -m varlite app, Models -> a run folder $R/var-fast" >&2; exit 2; }
    $PY -m varlite export-builtin --var $R/var-${WINNER#cifar10-} --name cifar10 --preset cifar10 \
        --cfg ${CFG:-8} --top-k ${TOPK:-100} --top-p ${TOPP:-0} --storage int8 ;;
all)         # the whole recipe with the shipped judge, each stage's wall and CPU time appended to $R/timings.txt
    mkdir -p "$R"
    echo "# $(date -u +%FT%TZ) $(uname -n): $($PY -c 'from varlite.device import cpu_features; print(cpu_features())'); device ${DEVICE:-auto}, precision ${PRECISION:-auto}, ${THREADS:-2} threads" | tee -a "$R/timings.txt"
    for stage in tokenizer encode long evaluate; do
        $PY "$(dirname "$0")/timed.py" "$R/timings.txt" $stage bash "$0" $stage
    done ;;
*) echo "usage: $0 all|tokenizer|encode|ablation|long|evaluate|export|judge|judge-export" >&2; exit 2 ;;
esac
