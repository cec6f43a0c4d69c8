#!/usr/bin/env bash
# Fill .gpu/ (git-ignored) with what a lent GPU machine lacks, before the call that runs a GPU script there:
# RecBole 1.2.1 and the three of its requirements that machine's image lacks, as wheels (it reaches no registry),
# and the benchmark data. Usage: bash benchmarks/gpu_prepare.sh [DATA_PATH] [DATASET ...]
# (default ../shared/data amazon-beauty). Then: run(command="bash benchmarks/gpu_study.sh .gpu/data $OUT 540",
# carry=[".gpu"]).
set -eu
data=${1:-../shared/data}
shift || true
datasets=${*:-amazon-beauty}
mkdir -p .gpu/wheels .gpu/data
python3 -m pip download -q --no-deps -d .gpu/wheels recbole==1.2.1 colorlog==4.7.2 texttable==1.7.2 thop==0.1.1.post2209072238
for dataset in $datasets; do
    mkdir -p ".gpu/data/$dataset"
    cp "$data/$dataset/"*.inter ".gpu/data/$dataset/"
done
du -sh .gpu
