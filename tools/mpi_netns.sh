#!/bin/sh
# tools/mpi_netns.sh RATE PROGRAM [ARGS] - run PROGRAM as HOSTS (2, or up to 8) MPI ranks
# on as many "hosts" that share nothing but a network of RATE: network namespaces rnh1
# (10.77.0.1) .. rnhN, each its own hostname, each joined by a veth pair to one bridge in
# a "switch" namespace (rnsw), both ends of every pair shaped by a token-bucket filter
# (tc tbf): each host sends and receives at RATE, as on a switch's port. RATE is a tc rate
# (10gbit, 2500mbit, 1gbit) or "none" (unshaped). Open MPI sees N nodes: ranks talk over
# TCP on that network only (--mca btl tcp,self), never through shared memory. MTU=9000
# sets jumbo frames (1500); MPIRUN_ARGS adds mpirun options. doc/PERF.md's figures:
#   tools/mpi_netns.sh 1gbit build-mpi/tests/test_dist --allreduce 25557032 7
#   HOSTS=4 tools/mpi_netns.sh 1gbit build-mpi/tests/test_dist --allreduce 25557032 7
#   tools/mpi_netns.sh none build-mpi/train --arch resnet50 ...
# Needs root, iproute2 (ip, tc, bridge support), util-linux (unshare) and the MPI build.
# The namespaces, the /etc/hosts lines and the helper files are removed when it ends.
set -eu
rate=${1:?usage: [HOSTS=N] tools/mpi_netns.sh RATE|none PROGRAM [ARGS]}
shift
[ $# -gt 0 ] || { echo "tools/mpi_netns.sh: no program to run" >&2; exit 2; }
hosts=${HOSTS:-2}
case $hosts in [2-8]) ;; *) echo "tools/mpi_netns.sh: HOSTS=$hosts: expected 2 to 8" >&2; exit 2;; esac
[ "$(id -u)" = 0 ] || { echo "tools/mpi_netns.sh: needs root (ip netns, tc)" >&2; exit 1; }
for tool in ip tc unshare mpirun; do
  command -v $tool > /dev/null || { echo "tools/mpi_netns.sh: $tool not found" >&2; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/mpi_netns.XXXXXX")
cleanup() {
  for i in 1 2 3 4 5 6 7 8; do ip netns del rnh$i 2> /dev/null || true; done
  ip netns del rnsw 2> /dev/null || true
  sed -i '/# tools\/mpi_netns.sh$/d' /etc/hosts
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup
mkdir -p "$T"
ip netns add rnsw
ip -n rnsw link add rn_br type bridge
ip -n rnsw link set rn_br up
# burst: a few milliseconds of traffic at RATE, at least 256 KB, as a NIC queue holds
shape() { [ "$rate" = none ] || ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$rate" burst 1mb latency 100ms; }
hostlist=
for i in $(seq "$hosts"); do
  ip netns add rnh$i
  ip link add rn_veth netns rnh$i type veth peer name rn_port$i netns rnsw
  ip -n rnh$i addr add 10.77.0.$i/24 dev rn_veth
  ip -n rnh$i link set rn_veth mtu "${MTU:-1500}" up
  ip -n rnh$i link set lo up
  ip -n rnsw link set rn_port$i mtu "${MTU:-1500}" master rn_br up
  shape rnh$i rn_veth
  shape rnsw rn_port$i
  printf '10.77.0.%d rnh%d # tools/mpi_netns.sh\n' "$i" "$i" >> /etc/hosts
  hostlist=${hostlist:+$hostlist,}rnh$i:1
done
# Open MPI starts the remote daemon as "AGENT HOST COMMAND...", as it would run ssh
cat > "$T/agent" << 'EOF'
#!/bin/sh
host=$1; shift
exec ip netns exec "$host" unshare --uts sh -c "hostname $host; $*"
EOF
chmod +x "$T/agent"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
net="--mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24"
# mpirun itself runs on rnh1 (its local daemon) and starts the others' through the agent
ip netns exec rnh1 unshare --uts sh -c 'hostname rnh1; exec "$@"' sh \
  mpirun --mca plm_rsh_agent "$T/agent" --mca plm_rsh_no_tree_spawn 1 $net \
  --host "$hostlist" -np "$hosts" \
  -x OMP_NUM_THREADS -x OMP_WAIT_POLICY ${MPIRUN_ARGS:-} "$@"
