#!/usr/bin/env bash
# ucx_netns.sh - issue 8, Done-when 4: a kvnode and `layerkv run` in two
# network namespaces joined by a veth pair, over UCX TCP (UCX_TLS=tcp,
# UCX_NET_DEVICES per side): generation with every offloaded layer on the
# remote tier equals the all-device run. Needs root and `ip netns`; skips
# (77) when namespaces cannot be created.
# usage: ucx_netns.sh LAYERKV_BINARY SOURCE_DIR
set -u
bin=${1:?layerkv binary}
src=${2:?source dir}
. "$src/tests/integration/run_output.bash"
m=$src/models/stories260K
id=$$
na=lkv_a$id
nb=lkv_b$id
va=lkva$id
vb=lkvb$id
# a /24 unlikely to collide with other tests running at the same time
net=10.$((100 + id % 100)).$((id / 100 % 250)).
tmp=$(mktemp -d)
kp=""
cleanup() {
    [ -n "$kp" ] && kill "$kp" 2>/dev/null && wait "$kp" 2>/dev/null
    ip netns del "$na" 2>/dev/null
    ip netns del "$nb" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null ||
    ! ip netns add "$na" 2>/dev/null; then
    echo "skip: needs root and ip netns"
    exit 77
fi
# a namespace can be created but not entered in some sandboxes (a chroot
# whose / is not a mount point: "mount --make-rslave /" fails)
if ! ip netns exec "$na" true 2>"$tmp/err"; then
    echo "skip: ip netns exec not permitted here: $(head -1 "$tmp/err")"
    exit 77
fi
if ! ip netns add "$nb" || ! ip link add "$va" type veth peer name "$vb" ||
    ! ip link set "$va" netns "$na" || ! ip link set "$vb" netns "$nb"; then
    echo "skip: cannot create a veth pair between namespaces"
    exit 77
fi
ip -n "$na" addr add "${net}1/24" dev "$va"
ip -n "$nb" addr add "${net}2/24" dev "$vb"
ip -n "$na" link set "$va" up
ip -n "$nb" link set "$vb" up
ip -n "$na" link set lo up
ip -n "$nb" link set lo up

export UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n UCX_HANDLE_ERRORS=none
UCX_NET_DEVICES=$va ip netns exec "$na" "$bin" kvnode \
    --listen "tcp://${net}1:7400" --capacity-gib 0.02 2>"$tmp/kvnode.err" &
kp=$!
for _ in $(seq 1 100); do
    grep -q 'serving' "$tmp/kvnode.err" && break
    sleep 0.05
done

fail=0
g=(--model "$m/stories260K.gguf" --prompt "Tom and his dog" --prompt "The cat"
    --max-tokens 40 --temperature 0 --threads 1)
want=$(timeout 60 "$bin" run "${g[@]}" 2>/dev/null | sort_blocks)
for mode in reload stream; do
    got=$(UCX_NET_DEVICES=$vb timeout 60 ip netns exec "$nb" "$bin" run \
        "${g[@]}" --host-kv-blocks 0 --kvnode "tcp://${net}1:7400" \
        --offload-layers all-but-one --decode-offloaded $mode 2>"$tmp/err")
    rc=$?
    got=$(printf '%s\n' "$got" | sort_blocks)
    if [ $rc -ne 0 ] || [ -z "$want" ] || [ "$got" != "$want" ] ||
        ! grep -Eq 'kv moves: [1-9][0-9]* layer offloads' "$tmp/err"; then
        echo "FAIL netns $mode: rc=$rc"
        echo "  want: $want"
        echo "  got:  $got"
        sed 's/^/  stderr: /' "$tmp/err" | tail -10
        sed 's/^/  kvnode: /' "$tmp/kvnode.err" | tail -5
        fail=1
    else
        echo "ok   netns-veth-tcp-$mode"
    fi
done
exit $fail
