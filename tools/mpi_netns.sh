#!/bin/sh
# tools/mpi_netns.sh RATE PROGRAM [ARGS] - run PROGRAM as 2 MPI ranks on two "hosts" that
# share nothing but a network link of RATE: two network namespaces (rnh1 10.77.0.1,
# rnh2 10.77.0.2, each its own hostname) joined by a veth pair whose both ends are shaped
# by a token-bucket filter (tc tbf). RATE is a tc rate (10gbit, 2500mbit, 1gbit) or "none"
# (the veth pair unshaped). Open MPI sees two nodes: ranks talk over TCP on that link only
# (--mca btl tcp,self), never through shared memory. MTU=9000 sets jumbo frames (1500);
# MPIRUN_ARGS adds mpirun options. doc/PERF.md's "two hosts" figures:
#   tools/mpi_netns.sh 1gbit build-mpi/tests/test_dist --allreduce 25557032 7
#   tools/mpi_netns.sh none build-mpi/train --arch resnet50 ...
# Needs root, iproute2 (ip, tc), util-linux (unshare) and the MPI build. The namespaces,
# the /etc/hosts lines and the helper files are removed when it ends.
set -eu
rate=${1:?usage: tools/mpi_netns.sh RATE|none PROGRAM [ARGS]}
shift
[ $# -gt 0 ] || { echo "tools/mpi_netns.sh: no program to run" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "tools/mpi_netns.sh: needs root (ip netns, tc)" >&2; exit 1; }
for tool in ip tc unshare mpirun; do
  command -v $tool > /dev/null || { echo "tools/mpi_netns.sh: $tool not found" >&2; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/mpi_netns.XXXXXX")
cleanup() {
  ip netns del rnh1 2> /dev/null || true
  ip netns del rnh2 2> /dev/null || true
  sed -i '/# tools\/mpi_netns.sh$/d' /etc/hosts
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup
mkdir -p "$T"
ip netns add rnh1
ip netns add rnh2
ip link add rn_veth1 netns rnh1 type veth peer name rn_veth2 netns rnh2
for i in 1 2; do
  ip -n rnh$i addr add 10.77.0.$i/24 dev rn_veth$i
  ip -n rnh$i link set rn_veth$i mtu "${MTU:-1500}" up
  ip -n rnh$i link set lo up
  # burst: a few milliseconds of traffic at RATE, at least 256 KB, as a NIC queue holds
  [ "$rate" = none ] || ip netns exec rnh$i tc qdisc add dev rn_veth$i root tbf rate "$rate" \
    burst 1mb latency 100ms
done
printf '10.77.0.1 rnh1 # tools/mpi_netns.sh\n10.77.0.2 rnh2 # tools/mpi_netns.sh\n' >> /etc/hosts
# Open MPI starts the remote daemon as "AGENT HOST COMMAND...", as it would run ssh
cat > "$T/agent" << 'EOF'
#!/bin/sh
host=$1; shift
exec ip netns exec "$host" unshare --uts sh -c "hostname $host; $*"
EOF
chmod +x "$T/agent"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
net="--mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24"
# mpirun itself runs on rnh1 (its local daemon) and reaches rnh2 through the agent
ip netns exec rnh1 unshare --uts sh -c 'hostname rnh1; exec "$@"' sh \
  mpirun --mca plm_rsh_agent "$T/agent" $net --host rnh1:1,rnh2:1 -np 2 \
  -x OMP_NUM_THREADS -x OMP_WAIT_POLICY ${MPIRUN_ARGS:-} "$@"
