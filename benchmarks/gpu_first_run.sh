#!/usr/bin/env bash
# The first thing to run on a newly lent GPU machine (BENCHMARKS.md, "GPU runs"), in one call:
#   1. the package's self-check on CUDA (every model and variant trains, evaluates, reloads, samples; AMP epochs);
#   2. training and full-ranking throughput of every model at its YAML sizes on Beauty (benchmarks/throughput.py),
#      PreferDiff also at the paper's d 3072, DiffuRec also with the cheap samplers of run 16;
#   3. the DiffuRec paper preset (DiffuRec-paper) through the runner on Beauty, for as many epochs as the time
#      left allows: a timed end-to-end run, not the paper's 500-epoch result.
# Usage: bash benchmarks/gpu_first_run.sh DATA_PATH OUT_DIR SECONDS (after benchmarks/gpu_prepare.sh; carry .gpu)
# Each stage is bounded by the seconds left, and a failing stage does not stop the next one; every output lands
# in OUT_DIR (env.txt, selfcheck.log, throughput.jsonl, throughput.log, train.log).
set -u
data=${1:-../shared/data}
out=${2:-gpu-results}
budget=${3:-540}
start=$(date +%s)
mkdir -p "$out"
source "$(dirname "$0")/gpu_common.sh"
write_env "$out/env.txt"

echo "== self-check on CUDA"
bounded 240 200 python3 -m recbole_diffusion.selfcheck --device cuda > "$out/selfcheck.log" 2>&1
echo "self-check exit status $?"
tail -n 5 "$out/selfcheck.log"

echo "== throughput at YAML sizes, Beauty"
measure() {
    bounded 75 120 python3 benchmarks/throughput.py --data_path "$data" --train_batches 30 --eval_batches 6 "$@" \
        > "$out/throughput.current" 2>> "$out/throughput.log"
    local status=$?
    echo "$* -> exit $status" >> "$out/throughput.log"
    python3 -c "import json, sys; r = json.load(open(sys.argv[1])); r['arguments'] = sys.argv[2:];
print(json.dumps(r))" "$out/throughput.current" "$@" >> "$out/throughput.jsonl" 2>/dev/null
    tail -n 1 "$out/throughput.jsonl"
}
measure --model SASRec
measure --model DiffuRec
measure --model DiffuRec --set sampler=ddim ddim_steps=2
measure --model DiffuRec --set sampler=one_step
measure --model DiffuRecSys-V2
measure --model DreamRec
measure --model PreferDiff
measure --model PreferDiff --set hidden_size=3072 inner_size=3072
measure --model SeqDiffRec
rm -f "$out/throughput.current"

echo "== DiffuRec-paper on Beauty through the runner, epochs from the time left"
epochs=$(python3 - "$out/throughput.jsonl" "$(seconds_left)" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
row = next((r for r in rows if r["arguments"] == ["--model", "DiffuRec"]), None)
left = int(sys.argv[2]) - 90  # data loading, the test pass, the upload
if row is None:
    print(0)
else:
    train_sequences, users = 153_776, 22_363  # Beauty's leave-one-out training prefixes and users
    epoch = train_sequences / row["train_sequences_per_second"] * 1.3 + users / row["eval_users_per_second"]
    print(max(0, min(500, int(left / epoch))))
EOF
)
echo "epochs: $epochs"
if (( epochs >= 1 )); then
    bounded 600 10 python3 run_recbole_diffusion.py --model=DiffuRec-paper --dataset=amazon-beauty \
        --data_path="$data" --epochs="$epochs" --eval_step=1 --stopping_step=100 > "$out/train.log" 2>&1
    echo "runner exit status $?"
    grep -E "epoch [0-9]+ training|valid result|test result|best valid" "$out/train.log" | tail -n 12
fi
echo "total seconds: $(( $(date +%s) - start ))"
