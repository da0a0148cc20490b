#!/usr/bin/env bash
# mpi_netns.sh - two "hosts": network namespaces joined by a veth pair
# (created and removed here; needs root, else skipped with 77). mpirun runs
# in namespace A and reaches host B through an rsh agent that does
# `ip netns exec B`; the ranks of one instance talk over TCP across the veth
# (btl self,tcp on the pair's subnet only). TP2 (one rank per host) and
# TP2 x PP2 (--map-by node: each TP pair spans the hosts) give the greedy
# tokens of one process (issue 7, done-when 2).
# usage: mpi_netns.sh LAYERKV_BINARY SOURCE_DIR
set -u
bin=${1:?layerkv binary}
src=${2:?source dir}
. "$src/tests/integration/mpi_common.bash"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
command -v ip >/dev/null 2>&1 || { echo "skip: no ip(8)"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "skip: needs root for ip netns"; exit 77; }

id=$(($$ % 200 + 20))
nsa=lkvmpa$$ nsb=lkvmpb$$ va=lkvma$$ vb=lkvmb$$
net=10.79.$id
tmp=$(mktemp -d)
cleanup() {
    ip netns del "$nsa" 2>/dev/null
    ip netns del "$nsb" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
if ! ip netns add "$nsa" 2>"$tmp/err"; then
    echo "skip: ip netns not permitted here: $(cat "$tmp/err")"
    exit 77
fi
# created but not enterable in some sandboxes (a chroot whose / is not a
# mount point: "mount --make-rslave /" fails)
if ! ip netns exec "$nsa" true 2>"$tmp/err"; then
    echo "skip: ip netns exec not permitted here: $(head -1 "$tmp/err")"
    exit 77
fi
set -e
ip netns add "$nsb"
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$nsa"
ip link set "$vb" netns "$nsb"
ip -n "$nsa" addr add "$net.1/24" dev "$va"
ip -n "$nsb" addr add "$net.2/24" dev "$vb"
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set "$va" up
ip -n "$nsb" link set "$vb" up
set +e

# the launcher trick: Open MPI starts its daemon on "host" $net.2 through
# this agent, which runs the command inside that host's namespace
cat >"$tmp/agent.sh" <<AGENT
#!/bin/sh
while [ \$# -gt 0 ]; do case \$1 in -*) shift ;; *) break ;; esac; done
host=\$1; shift
case \$host in
$net.1) ns=$nsa ;;
$net.2) ns=$nsb ;;
*) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
chmod +x "$tmp/agent.sh"
export OMPI_MCA_plm_rsh_agent=$tmp/agent.sh
export OMPI_MCA_btl=self,tcp
export OMPI_MCA_btl_tcp_if_include=$net.0/24
export OMPI_MCA_oob_tcp_if_include=$net.0/24
printf '%s slots=2\n%s slots=2\n' "$net.1" "$net.2" >"$tmp/hostfile"

m=$src/models/stories260K/stories260K.gguf
args=(run --model "$m" --prompt "Once upon a time" --prompt "Tom and his dog"
    --max-tokens 30 --temperature 0 --threads 1 --offload-layers interleave)
ref=$("$bin" "${args[@]}" 2>"$tmp/err")
fail=0
for cfg in "2 --tp 2" "4 --tp 2 --pp 2"; do
    read -r -a a <<<"$cfg"
    out=$(timeout 120 ip netns exec "$nsa" mpirun --hostfile "$tmp/hostfile" \
        --map-by node -np "${a[0]}" "$bin" "${args[@]}" "${a[@]:1}" \
        2>"$tmp/err")
    rc=$?
    if [ $rc -ne 0 ] || [ -z "$ref" ] || [ "$out" != "$ref" ]; then
        echo "FAIL two-host np $cfg: rc=$rc"
        printf '%s\n' "$out" | sed 's/^/  got:      /'
        printf '%s\n' "$ref" | sed 's/^/  expected: /'
        tail -15 "$tmp/err" | sed 's/^/  stderr: /'
        fail=1
    else
        echo "ok   two-host np $cfg"
    fi
done
exit $fail
