# Sourced by the GPU scripts (gpu_first_run.sh, gpu_study.sh): the time bound of every stage, and the packages the
# lent machine lacks. It reaches no package registry, so benchmarks/gpu_prepare.sh downloads RecBole and the three
# of its requirements its image lacks into .gpu/wheels (git-ignored, carried with the call); the repository goes on
# PYTHONPATH with properties/ where an install puts it. Set `budget` (seconds) and `start` before sourcing.
export PYTHONUNBUFFERED=1

seconds_left() { echo $(( budget - ($(date +%s) - start) )); }

# Run "$@" for at most min(cap, seconds left - reserve) seconds; skip it when under 20 seconds would remain.
bounded() {
    local cap=$1 reserve=$2; shift 2
    local limit=$(( $(seconds_left) - reserve ))
    (( limit > cap )) && limit=$cap
    if (( limit < 20 )); then echo "SKIPPED (time): $*"; return 0; fi
    timeout -k 5 "$limit" "$@"
    local status=$?
    (( status == 124 )) && echo "STOPPED after ${limit}s: $*"
    return $status
}

# Without an installed recbole: the carried wheels into /tmp/site, this checkout on PYTHONPATH.
if ! python3 -c "import recbole" 2>/dev/null && compgen -G ".gpu/wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    cp -r properties recbole_diffusion/
    export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

write_env() {
    {
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
        python3 -c "import sys, torch, numpy, pandas, recbole, scipy; print(sys.version.split()[0], 'torch',
torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__, 'pandas', pandas.__version__, 'scipy',
scipy.__version__, 'recbole', recbole.__version__, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available()
else None)"
        nproc
        git rev-parse HEAD 2>/dev/null
    } > "$1" 2>&1
    cat "$1"
}
