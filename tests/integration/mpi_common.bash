# mpi_common.bash - sourced by tests/integration/mpi_*.sh: Open MPI settings
# for running as root on a small machine (deploy/mpirun/env.sh) and helpers.
# Skips the test (exit 77) when mpirun is not installed.
if ! command -v mpirun >/dev/null 2>&1; then
    echo "skip: mpirun not found (apt-get install openmpi-bin)"
    exit 77
fi
# shellcheck source=../../deploy/mpirun/env.sh
. "$src/deploy/mpirun/env.sh"
# Open MPI's own allocations are not ours to find: no leak check under ASan
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"

# mpi NP ARGS...: a bounded mpirun of the layerkv binary
mpi() {
    local np=$1
    shift
    timeout 120 mpirun -np "$np" "$bin" "$@"
}
