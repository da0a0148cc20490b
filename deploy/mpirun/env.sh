# env.sh - environment for running layerkv ranks under Open MPI 4.1
# (docs/parallelism.md). Source it before mpirun: `. deploy/mpirun/env.sh`.
# Every variable keeps a value already set in the environment.

# Containers often run as root; Open MPI refuses that unless told twice.
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
# More ranks than cores (tests on a 2-core machine): allow oversubscription.
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
# Oversubscribed ranks must yield the CPU while they wait in MPI calls.
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
# Where ptrace is blocked (Docker without CAP_SYS_PTRACE) the shared-memory
# single-copy path fails: uncomment.
# export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Across hosts: name the interface the ranks talk over (TCP BTL and the
# runtime's out-of-band channel), e.g. LKV_MPI_IFACE=eth0.
if [ -n "${LKV_MPI_IFACE:-}" ]; then
    export OMPI_MCA_btl_tcp_if_include=${OMPI_MCA_btl_tcp_if_include:-$LKV_MPI_IFACE}
    export OMPI_MCA_oob_tcp_if_include=${OMPI_MCA_oob_tcp_if_include:-$LKV_MPI_IFACE}
    # UCX (the remote KV tier, or --mca pml ucx): peers on other hosts or
    # namespaces must not try shared memory; pin the device too.
    export UCX_TLS=${UCX_TLS:-tcp}
    export UCX_NET_DEVICES=${UCX_NET_DEVICES:-$LKV_MPI_IFACE}
fi
# Open MPI's UCX PML is skipped by default without InfiniBand; to force it
# (faster on one host), all three are needed:
# export OMPI_MCA_pml=ucx OMPI_MCA_pml_ucx_tls=any OMPI_MCA_pml_ucx_devices=any
