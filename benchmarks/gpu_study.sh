#!/usr/bin/env bash
# Issue 23's GPU part (BENCHMARKS run 19), one bounded call on a lent GPU: tuned SASRec (the study's best.yaml) and
# DiffuRec as the authors train it (DiffuRec-paper, untuned), both at the paper's d 128 and L 50 on full Beauty,
# through recbole_diffusion.compare (one seed; records in OUT_DIR/sasrec and OUT_DIR/diffurec-paper with the
# validation curve, test metrics, seconds and GPU memory). SASRec first, at most 100 epochs, stopping after 5
# validations without improvement, within SASREC_SECONDS (default 180; a run cut by the bound leaves no record).
# DiffuRec-paper then trains for as many epochs as the seconds left allow, validated every 5 (no early stopping:
# the curve is the point); it is not the paper's 500-epoch result unless the seconds allow 500 epochs.
# Usage: bash benchmarks/gpu_study.sh DATA_PATH OUT_DIR SECONDS [EPOCH_SECONDS] (after benchmarks/gpu_prepare.sh;
# carry .gpu). EPOCH_SECONDS: DiffuRec-paper's seconds per epoch with its validation every 5, default 11 (GPU run
# 1 on an H200: 5.6 s of training and 9.4 s per validation, times 1.5 for a slower card). DATASET (environment,
# default amazon-beauty) and SASREC_SECONDS let the script be tried on a CPU with a small slice. Checkpoints stay
# on the machine: DiffuRec-paper's (about 30 MB with Adam's state) is over what a call brings back, so a later
# loan starts again rather than resuming.
set -u
data=${1:-../shared/data}
out=${2:-gpu-results}
budget=${3:-540}
epoch_seconds=${4:-11}
dataset=${DATASET:-amazon-beauty}
start=$(date +%s)
mkdir -p "$out"
source "$(dirname "$0")/gpu_common.sh"
write_env "$out/env.txt"
paper_sizes=(--MAX_ITEM_LIST_LENGTH 50 --hidden_size 128 --inner_size 512)

echo "== tuned SASRec (best.yaml) at d 128, L 50"
bounded "${SASREC_SECONDS:-180}" 60 python3 -m recbole_diffusion.compare --models SASRec --dataset "$dataset" \
    --seeds 1 --output "$out/sasrec" --data_path "$data" \
    --model_config SASRec=benchmarks/study-beauty/tune/SASRec/best.yaml "${paper_sizes[@]}" \
    --epochs 100 --eval_step 1 --stopping_step 5 --show_progress False > "$out/sasrec.log" 2>&1
echo "SASRec exit status $?"
grep -E "^\[|test" "$out/sasrec.log" | tail -n 3

echo "== DiffuRec-paper, epochs from the seconds left"
epochs=$(( ($(seconds_left) - 60) / epoch_seconds ))
(( epochs > 500 )) && epochs=500
echo "epochs: $epochs"
if (( epochs >= 1 )); then
    bounded 600 5 python3 -m recbole_diffusion.compare --models DiffuRec-paper --dataset "$dataset" --seeds 1 \
        --output "$out/diffurec-paper" --data_path "$data" --epochs "$epochs" --eval_step 5 --stopping_step 100 \
        --show_progress False > "$out/diffurec-paper.log" 2>&1
    echo "DiffuRec-paper exit status $?"
    grep -E "^\[|test" "$out/diffurec-paper.log" | tail -n 3
fi
echo "total seconds: $(( $(date +%s) - start ))"
