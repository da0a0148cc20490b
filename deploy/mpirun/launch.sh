#!/usr/bin/env bash
# launch.sh - start layerkv ranks with mpirun (docs/parallelism.md).
#
#   deploy/mpirun/launch.sh [-H HOSTFILE] [-i IFACE] [-n INSTANCES] \
#       [-b LAYERKV_BINARY] -- SUBCOMMAND --tp T --pp P ARGS...
#
# The rank count is INSTANCES x T x P (T and P read from the arguments;
# `run` serves one instance). -i names the network interface between hosts
# (sets the TCP BTL / OOB interface and UCX_TLS=tcp, UCX_NET_DEVICES).
# Examples:
#   deploy/mpirun/launch.sh -- run --model m.gguf --prompt hi --tp 2
#   deploy/mpirun/launch.sh -H hosts -i eth0 -- run --model m --tp 2 --pp 2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hostfile="" iface="" inst=1 bin=""
while getopts "H:i:n:b:h" o; do
    case $o in
    H) hostfile=$OPTARG ;;
    i) iface=$OPTARG ;;
    n) inst=$OPTARG ;;
    b) bin=$OPTARG ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || { sed -n '2,13p' "$0"; exit 2; }
if [ -z "$bin" ]; then
    bin=$(command -v layerkv || true)
    [ -n "$bin" ] || bin=$here/../../build/layerkv
fi
tp=1 pp=1
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[$i]} in
    --tp) tp=${args[$((i + 1))]} ;;
    --tp=*) tp=${args[$i]#--tp=} ;;
    --pp) pp=${args[$((i + 1))]} ;;
    --pp=*) pp=${args[$i]#--pp=} ;;
    esac
done
np=$((inst * tp * pp))
[ -n "$iface" ] && export LKV_MPI_IFACE=$iface
# shellcheck source=env.sh
. "$here/env.sh"
extra=()
[ -n "$hostfile" ] && extra+=(--hostfile "$hostfile" --map-by node)
echo "launch.sh: mpirun -np $np (tp $tp x pp $pp x $inst instance(s)) $bin $*" >&2
exec mpirun -np "$np" "${extra[@]}" "$bin" "$@"
