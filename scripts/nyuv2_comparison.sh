#!/usr/bin/env bash
# The NYUv2 comparison of the multi-task optimisation papers, on one GPU: separate (single-task), naive_mtl (equal
# weights), uncertainty, gradnorm, and naive_mtl with strategy.weighting=mgda,pcgrad,cagrad,nash_mtl,famo, on
# suites/nyuv2.yaml (dilated ResNet-50 + an ASPP head per task, 200 epochs, batch 8; docs/suites.md "NYUv2 and
# CityScapes"), then the leaderboard with FAMO's Table 1 printed under it (reference=nyuv2_famo).
#
#     DATA=/path/to/nyuv2 bash scripts/nyuv2_comparison.sh           (from the repository root)
#
# DATA: the folder holding MTAN's train/ and val/ (default $BENCH_NYUV2_DIR, else ~/.cache/bench/nyuv2);
# SEEDS: seeds per row (default 1; the papers average 3); RESULTS: the results folder (default results);
# EPOCHS: override the suite's 200 (shorter runs are not the protocol); SMOKE=1: the same commands on the CPU on a
# few images with a small random ResNet for one epoch (checks this script and the data, not speed).
#
# Expected duration (an ESTIMATE, not a measurement; no GPU was available when this was written): one training
# image costs about 0.7 TFLOP per step (forward 84 GFLOP for the dilated ResNet-50 at 288x384 and about 54 GFLOP
# per ASPP head, counted with torch.utils.flop_counter on the CPU; backward ~2x forward), so one epoch of 636 images
# plus the validation pass is about 0.5 PFLOP; at an assumed 35-100 TFLOP/s sustained on one H100 (TF32
# convolutions, batch 8) that is 5-15 s per epoch, 17-50 minutes for a 200-epoch equal-weight run. Relative costs:
# separate 1.7 (three single-task networks), uncertainty 1.0, gradnorm 1.3, famo 1.35 (one extra forward),
# mgda/pcgrad/cagrad 1.45 and nash_mtl 1.5 (via=params: one backward per task through the backbone) -> about 12
# equal-weight runs: 3.5-10 hours per seed.
set -euo pipefail
export PYTHONUNBUFFERED=1 BENCH_PROGRESS=${BENCH_PROGRESS:-0}
PY=${PY:-python3}
DATA=${DATA:-${BENCH_NYUV2_DIR:-$HOME/.cache/bench/nyuv2}}
SEEDS=${SEEDS:-1}
RESULTS=${RESULTS:-results}
SMOKE=${SMOKE:-0}
EXTRA=()
[ -n "${EPOCHS:-}" ] && EXTRA+=("train.epochs=$EPOCHS")

for f in train/image/0.npy train/label/0.npy train/depth/0.npy train/normal/0.npy val/image/0.npy \
         val/label/0.npy val/depth/0.npy val/normal/0.npy; do
    if [ ! -f "$DATA/$f" ]; then
        echo "NYUv2 data missing: $DATA/$f; download MTAN's preprocessed NYUv2" \
             "(https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa) and set DATA=<folder with" \
             "train/ and val/>" >&2
        exit 2
    fi
done
echo "data: $DATA ($(ls "$DATA/train/image" | wc -l) train, $(ls "$DATA/val/image" | wc -l) val images)"

if [ "$SMOKE" = 1 ]; then
    EXTRA+=(train.epochs=1 train.max_train_samples=8 train.max_eval_samples=8 backbone.name=resnet18
            backbone.pretrained=false train.batch_size=4 train.device=cpu)
else
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "no CUDA GPU visible to torch: this comparison needs one (SMOKE=1 checks the script on the CPU)" >&2
        exit 3
    fi
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    # the backbone's ImageNet weights come from timm's hub cache; fail now rather than after the data is cached
    if ! "$PY" -c "import timm; timm.create_model('resnet50.tv_in1k', pretrained=True, num_classes=0)" >/dev/null 2>&1; then
        echo "timm cannot load resnet50.tv_in1k's pretrained weights (no hub access and no cache); run" \
             "python -c \"import timm; timm.create_model('resnet50.tv_in1k', pretrained=True)\" once where the hub is" \
             "reachable (HF_HUB_OFFLINE=1 then uses the cache)" >&2
        exit 4
    fi
    echo "expected: 3.5-10 hours per seed on one H100 (an estimate; see the header of this script)"
fi

run() { "$PY" -m bench run suite=nyuv2 "data_dir=$DATA" "seeds=$SEEDS" "results_dir=$RESULTS" report=false \
        ${EXTRA[@]+"${EXTRA[@]}"} "$@"; }

start=$(date +%s)
run strategy=separate,naive_mtl,uncertainty,gradnorm
# the gradient methods on the shared parameters' Jacobian (via=params), as the published tables computed them
# (bench's default on single-input suites, via=features, is the cheaper MGDA-UB-style Jacobian of the feature maps)
run strategy=naive_mtl strategy.weighting=mgda,pcgrad,cagrad,nash_mtl strategy.weighting_params.via=params
run strategy=naive_mtl strategy.weighting=famo   # loss-level: no Jacobian; gamma 1e-3, lr 0.025 (FAMO's NYUv2)
"$PY" -m bench report suite=nyuv2 "results_dir=$RESULTS" reference=nyuv2_famo
echo "took $(( ($(date +%s) - start) / 60 )) minutes; leaderboard: $RESULTS/nyuv2/report/leaderboard.md"
