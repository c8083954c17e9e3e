#!/usr/bin/env bash
# Macro benchmark: a stateful SIP proxy between a SIPp UAC and a SIPp UAS on loopback.
#
#   benches/run.sh [--target kamailio|switchboard|both] [--rates "200 500 1000 ..."]
#                  [--duration S] [--workers N] [--number USER] [--agents N]
#                  [--phases "calls register rss"] [--reg-rates "..."] [--reg-duration S]
#                  [--reg-users N] [--rss-regs N] [--rss-rate R] [--rss-warmup S] [--rss-linger S]
#                  [--switchboard-bin PATH] [--switchboard-config PATH]
#                  [--switchboard-cmd 'COMMAND'] [--results-dir DIR] [--no-build]
#                  [--proxy-sched default|nice:N|fifo:N] [--pin none|PROXY_CPUS/GEN_CPUS]
#                  [--uacs N]
#
# --proxy-sched starts every proxy under test (both targets alike, with all their processes and
# threads) under `nice -n N` or `chrt -f N` (SCHED_FIFO priority N); default: neither.
# --pin 0/1 runs every proxy under test on CPU list 0 and every load generator (the SIPps, tcpdump)
# on CPU list 1 (`taskset -c`), as if the trunks and phones were other machines; default: none.
# --uacs N splits each call rung's rate and calls over N SIPp UACs (same address, own ports), as if
# N trunks sent the load: one SIPp sends its calls in ticks (12-24 INVITEs within ~150 us every
# 4-8 ms at 3,000/s); N send N smaller, unsynchronised ticks. Default 1.
# Phase `calls`: for every target and every rate of the ladder it starts a fresh proxy, registers
# --agents agents (digest) from the UAS's ip:port, starts the SIPp UAS there, then a SIPp UAC that
# dials the merge-line NUMBER rate*duration times at that rate (bounded by -m, SIPp's own -timeout
# and an outer `timeout`). It reports successful/failed calls, the proxy's CPU time (utime+stime
# of the whole process tree, from /proc) per successful call, and post-dial delay p50/p99.
# Phase `register`: digest-authenticated REGISTERs at each --reg-rates rate. Phase `rss`: memory
# (PSS of the proxy's process tree) before and after --rss-regs distinct users register.
# The switchboard target defaults to target/release/switchboard (built by cargo first, unless
# --no-build or another binary/command is given) and benches/switchboard.bench.toml.
# See benches/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

TARGET=kamailio
RATES="200 500 1000 2000 3000"
DURATION=10
WORKERS="${BENCH_WORKERS:-2}"
NUMBER="${BENCH_NUMBER:-12331}" # a full-merge legacy line of dialplans/qinghai.toml
AGENTS="${BENCH_AGENTS:-2000}"   # agents registered from the UAS's ip:port in each call rung
AGENT_FIRST=800000               # agent users are AGENT_FIRST.. (benches/gen_agents.py)
PHASES="${BENCH_PHASES:-calls pdd register rss}"
REG_RATES="${BENCH_REG_RATES:-1000 2000 4000}"
REG_DURATION="${BENCH_REG_DURATION:-5}"
REG_USERS="${BENCH_REG_USERS:-20000}"
RSS_REGS="${BENCH_RSS_REGS:-100000}"
RSS_RATE="${BENCH_RSS_RATE:-2000}"
RSS_WARMUP="${BENCH_RSS_WARMUP:-40}" # s of REGISTER churn before the baseline (> Timer J)
PDD_RATE="${BENCH_PDD_RATE:-auto}" # auto: half the highest rate that passed in this run
RSS_LINGER="${BENCH_RSS_LINGER:-10}"
PAUSE_MS="${BENCH_PAUSE_MS:-100}"
SHM_MB="${BENCH_KAMAILIO_SHM_MB:-1024}"
SWITCHBOARD_BIN_DEFAULT="$ROOT/target/release/switchboard"
SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$SWITCHBOARD_BIN_DEFAULT}"
SWITCHBOARD_CONFIG="${SWITCHBOARD_CONFIG:-}"
SWITCHBOARD_CMD="${SWITCHBOARD_CMD:-}"
# The digest realm of the generated agents (password bench-<user>, benches/gen_agents.py).
SB_REALM="${BENCH_SWITCHBOARD_REALM:-12345.qh}"
PROXY_SCHED="${BENCH_PROXY_SCHED:-default}"
PIN="${BENCH_PIN:-none}"
UACS="${BENCH_UACS:-1}" # SIPp UACs sharing each call rung's rate (see --uacs)


BUILD="${BENCH_BUILD:-1}"
RESULTS_DIR="${BENCH_RESULTS_DIR:-$HERE/results}"

PROXY_ADDR=127.0.3.1
UAS_ADDR=127.0.3.2
UAC_ADDR=127.0.3.3
REG_ADDR=127.0.3.4 # REGISTER load (not the trunk address)

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
	case "$1" in
		--target) TARGET="$2"; shift 2 ;;
		--rates) RATES="$2"; shift 2 ;;
		--duration) DURATION="$2"; shift 2 ;;
		--workers) WORKERS="$2"; shift 2 ;;
		--number) NUMBER="$2"; shift 2 ;;
		--agents) AGENTS="$2"; shift 2 ;;
		--phases) PHASES="$2"; shift 2 ;;
		--reg-rates) REG_RATES="$2"; shift 2 ;;
		--reg-duration) REG_DURATION="$2"; shift 2 ;;
		--reg-users) REG_USERS="$2"; shift 2 ;;
		--rss-regs) RSS_REGS="$2"; shift 2 ;;
		--rss-rate) RSS_RATE="$2"; shift 2 ;;
		--rss-linger) RSS_LINGER="$2"; shift 2 ;;
		--rss-warmup) RSS_WARMUP="$2"; shift 2 ;;
		--pdd-rate) PDD_RATE="$2"; shift 2 ;;
		--switchboard-bin) SWITCHBOARD_BIN="$2"; shift 2 ;;
		--switchboard-config) SWITCHBOARD_CONFIG="$2"; shift 2 ;;
		--switchboard-cmd) SWITCHBOARD_CMD="$2"; shift 2 ;;
		--results-dir) RESULTS_DIR="$2"; shift 2 ;;
		--no-build) BUILD=0; shift ;;
		--proxy-sched) PROXY_SCHED="$2"; shift 2 ;;
		--pin) PIN="$2"; shift 2 ;;
		--uacs) UACS="$2"; shift 2 ;;
		-h|--help) usage 0 ;;
		*) echo "unknown argument: $1" >&2; usage 2 >&2 ;;
	esac
done

case "$TARGET" in
	kamailio) TARGETS=(kamailio) ;;
	switchboard) TARGETS=(switchboard) ;;
	both) TARGETS=(kamailio switchboard) ;;
	*) echo "--target must be kamailio, switchboard or both" >&2; exit 2 ;;
esac
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 1 && "$DURATION" -le 600 ]] \
	|| { echo "--duration must be 1..600 seconds" >&2; exit 2; }
[[ "$WORKERS" =~ ^[0-9]+$ && "$WORKERS" -ge 1 ]] || { echo "--workers must be >= 1" >&2; exit 2; }
for r in $RATES $REG_RATES $RSS_RATE; do
	[[ "$r" =~ ^[0-9]+$ && "$r" -ge 1 && "$r" -le 100000 ]] || { echo "bad rate: $r" >&2; exit 2; }
done
for n in "$AGENTS" "$REG_USERS" "$RSS_REGS" "$REG_DURATION" "$RSS_LINGER" "$RSS_WARMUP"; do
	[[ "$n" =~ ^[0-9]+$ ]] || { echo "not a number: $n" >&2; exit 2; }
done
[[ "$AGENTS" -ge 1 && "$REG_USERS" -ge 1 && "$REG_DURATION" -ge 1 ]] \
	|| { echo "--agents, --reg-users and --reg-duration must be >= 1" >&2; exit 2; }
for ph in $PHASES; do
	[[ "$ph" == calls || "$ph" == pdd || "$ph" == register || "$ph" == rss ]] \
		|| { echo "--phases takes calls, pdd, register, rss" >&2; exit 2; }
done
[[ "$PDD_RATE" == auto || "$PDD_RATE" =~ ^[0-9]+$ ]] || { echo "--pdd-rate: auto or calls/s" >&2; exit 2; }
[[ "$UACS" =~ ^[0-9]+$ && "$UACS" -ge 1 && "$UACS" -le 16 ]] || { echo "--uacs must be 1..16" >&2; exit 2; }
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }
# The scheduling both proxies run under (the load generators always run as they are).
case "$PROXY_SCHED" in
	default) SCHED_PREFIX=() ;;
	nice:-[0-9]*|nice:[0-9]*) SCHED_PREFIX=(nice -n "${PROXY_SCHED#nice:}") ;;
	fifo:[0-9]*) SCHED_PREFIX=(chrt -f "${PROXY_SCHED#fifo:}") ;;
	*) echo "--proxy-sched: default, nice:N or fifo:N" >&2; exit 2 ;;
esac
# CPU placement: proxies on one CPU list, load generators on another (or both anywhere).
GEN_PREFIX=()
case "$PIN" in
	none) ;;
	[0-9]*/[0-9]*)
		command -v taskset >/dev/null || { echo "--pin needs taskset (util-linux)" >&2; exit 2; }
		SCHED_PREFIX=(taskset -c "${PIN%%/*}" "${SCHED_PREFIX[@]}")
		GEN_PREFIX=(taskset -c "${PIN#*/}") ;;
	*) echo "--pin: none or PROXY_CPUS/GEN_CPUS (taskset lists, e.g. 0/1)" >&2; exit 2 ;;
esac

for tool in sipp timeout pgrep ss python3 $(has_phase pdd && echo tcpdump); do
	command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
if [[ " ${TARGETS[*]} " == *" kamailio "* ]]; then
	command -v kamailio >/dev/null || { echo "missing kamailio (apt-get install -y kamailio)" >&2; exit 2; }
fi

if [[ " ${TARGETS[*]} " == *" switchboard "* && -z "$SWITCHBOARD_CMD" ]]; then
	if [[ "$BUILD" == 1 && "$SWITCHBOARD_BIN" == "$SWITCHBOARD_BIN_DEFAULT" ]]; then
		command -v cargo >/dev/null || { echo "missing cargo (or pass --no-build / --switchboard-bin)" >&2; exit 2; }
		echo "[bench] cargo build --release -p switchboard --bin switchboard" >&2
		(cd "$ROOT" && cargo build --release -q -p switchboard --bin switchboard) \
			|| { echo "cargo build failed" >&2; exit 2; }
	fi
	[[ -x "$SWITCHBOARD_BIN" ]] || { echo "switchboard binary not found: $SWITCHBOARD_BIN (cargo build --release, or --switchboard-bin)" >&2; exit 2; }
fi
if [[ " ${TARGETS[*]} " == *" switchboard "* ]]; then
	SWITCHBOARD_CONFIG="${SWITCHBOARD_CONFIG:-$HERE/switchboard.bench.toml}"
	[[ -f "$SWITCHBOARD_CONFIG" ]] \
		|| { echo "switchboard config template not found: $SWITCHBOARD_CONFIG (see README)" >&2; exit 2; }
fi

WORK="$(mktemp -d /tmp/switchboard-bench.XXXXXX)"
CLK_TCK="$(getconf CLK_TCK)"
STARTED_PIDS=()

log() { printf '[bench] %s\n' "$*" >&2; }

# Every process we start is recorded here; on exit each one (and any descendant still
# alive, found by walking its children by PID) gets TERM, then KILL.
descendants() {
	local p c
	for p in "$@"; do
		for c in $(pgrep -P "$p" 2>/dev/null || true); do
			echo "$c"
			descendants "$c"
		done
	done
}

stop_pid() { # pid [signal, default TERM]
	local pid="$1" sig="${2:-TERM}" tree p i
	kill -0 "$pid" 2>/dev/null || return 0
	tree="$(descendants "$pid")"
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	for p in $tree; do
		kill -KILL "$p" 2>/dev/null || true
	done
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local pid
	for pid in "${STARTED_PIDS[@]}"; do
		stop_pid "$pid"
	done
	STARTED_PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
	local keep=() p
	for p in "${STARTED_PIDS[@]}"; do
		[[ "$p" == "$1" ]] || keep+=("$p")
	done
	STARTED_PIDS=("${keep[@]}")
}

free_udp_port() {
	python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
s.close()
PY
}

wait_udp_listen() { # addr port pid
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$3" 2>/dev/null || return 1
		if ss -Hlun "src $1:$2" 2>/dev/null | grep -q .; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# utime+stime (+ reaped children's cutime+cstime) of a process and all its descendants, in ticks.
tree_ticks() {
	local total=0 p s
	local -a f
	for p in "$1" $(descendants "$1"); do
		s="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
		s="${s##*) }"
		read -r -a f <<<"$s"
		total=$((total + f[11] + f[12] + f[13] + f[14]))
	done
	echo "$total"
}

start_uas() { # port logdir -> sets UAS_PID
	local port="$1" dir="$2"
	(cd "$dir" && exec timeout -k 5 "$((DURATION + 120))" \
		"${GEN_PREFIX[@]}" sipp -sf "$HERE/scenarios/uas.xml" -i "$UAS_ADDR" -p "$port" -t u1 \
		-nostdin -trace_err -error_file "$dir/uas_errors.log" \
		>"$dir/uas.out" 2>&1 </dev/null) &
	UAS_PID=$!
	STARTED_PIDS+=("$UAS_PID")
	wait_udp_listen "$UAS_ADDR" "$port" "$UAS_PID" || { log "SIPp UAS did not come up, see $dir/uas.out"; return 1; }
}

start_kamailio() { # listen_port uas_port dir -> sets PROXY_PID
	local lport="$1" uport="$2" dir="$3"
	mkdir -p "$dir/run"
	(cd "$dir" && exec timeout -k 5 "$PROC_LIMIT" \
		"${SCHED_PREFIX[@]}" kamailio -f "$HERE/kamailio/kamailio.cfg" -DD -E \
		-l "udp:$PROXY_ADDR:$lport" -n "$WORKERS" \
		-A "MERGE_NUMBER=\"$NUMBER\"" -A "AGENT_USER=\"$AGENT_FIRST\"" -A "REALM=\"$SB_REALM\"" \
		-A "UAS_URI=\"sip:$UAS_ADDR:$uport\"" \
		-m "$SHM_MB" -M 8 -Y "$dir/run" -P "$dir/run/kamailio.pid" \
		>"$dir/proxy.out" 2>&1 </dev/null) &
	PROXY_PID=$!
	STARTED_PIDS+=("$PROXY_PID")
	wait_udp_listen "$PROXY_ADDR" "$lport" "$PROXY_PID" || { log "kamailio did not come up, see $dir/proxy.out"; return 1; }
}

# The switchboard target. The command runs in the foreground (no daemonizing), under bash,
# with these variables exported:
#   BENCH_LISTEN_ADDR BENCH_LISTEN_PORT BENCH_LISTEN   where the proxy must listen (UDP)
#   BENCH_UAS_ADDR BENCH_UAS_PORT BENCH_UAS            the UAS (where the agents register from)
#   BENCH_NUMBER BENCH_WORKERS BENCH_TMPDIR            dialled user part, workers, scratch dir
#   BENCH_ROOT                                         the repository root (the command's cwd
#                                                      is BENCH_TMPDIR, so use absolute paths)
#   SWITCHBOARD_BIN SWITCHBOARD_CONFIG                 binary; rendered config (see below)
# If --switchboard-config is given, that file is treated as a template: the tokens
# @LISTEN_ADDR@ @LISTEN_PORT@ @UAS_ADDR@ @UAS_PORT@ @NUMBER@ @WORKERS@ @TMPDIR@ @ROOT@ @REALM@
# are replaced, @SEATS@ becomes `seats_file = "<dir>/seats.toml"` (calls phase) or nothing, the
# generated agents (agents.toml of benches/gen_agents.py) are appended, and SWITCHBOARD_CONFIG
# points at the rendered copy in the rung's temp dir.
# Default command: "$SWITCHBOARD_BIN" run -c "$SWITCHBOARD_CONFIG"
start_switchboard() { # listen_port uas_port dir agents_dir with_seats(0|1) -> sets PROXY_PID
	local lport="$1" uport="$2" dir="$3" adir="$4" seats="$5" cfg="" cmd seats_line=""
	if [[ "$seats" == 1 ]]; then seats_line="seats_file = \"$adir/seats.toml\""; fi
	if [[ -n "$SWITCHBOARD_CONFIG" ]]; then
		cfg="$dir/switchboard.conf"
		sed -e "s|@LISTEN_ADDR@|$PROXY_ADDR|g" -e "s|@LISTEN_PORT@|$lport|g" \
			-e "s|@UAS_ADDR@|$UAS_ADDR|g" -e "s|@UAS_PORT@|$uport|g" \
			-e "s|@NUMBER@|$NUMBER|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@TMPDIR@|$dir|g" \
			-e "s|@ROOT@|$ROOT|g" -e "s|@REALM@|$SB_REALM|g" -e "s|@SEATS@|$seats_line|g" \
			"$SWITCHBOARD_CONFIG" >"$cfg"
		cat "$adir/agents.toml" >>"$cfg"
	fi
	cmd="${SWITCHBOARD_CMD:-exec \"\$SWITCHBOARD_BIN\" run -c \"\$SWITCHBOARD_CONFIG\"}"
	(cd "$dir" &&
		export BENCH_LISTEN_ADDR="$PROXY_ADDR" BENCH_LISTEN_PORT="$lport" \
			BENCH_LISTEN="$PROXY_ADDR:$lport" BENCH_UAS_ADDR="$UAS_ADDR" \
			BENCH_UAS_PORT="$uport" BENCH_UAS="$UAS_ADDR:$uport" BENCH_NUMBER="$NUMBER" \
			BENCH_WORKERS="$WORKERS" BENCH_TMPDIR="$dir" BENCH_ROOT="$ROOT" \
			SWITCHBOARD_BIN="$SWITCHBOARD_BIN" SWITCHBOARD_CONFIG="$cfg" &&
		exec timeout -k 5 "$PROC_LIMIT" "${SCHED_PREFIX[@]}" bash -c "$cmd" \
		>"$dir/proxy.out" 2>&1 </dev/null) &
	PROXY_PID=$!
	STARTED_PIDS+=("$PROXY_PID")
	# 100,000 configured agents take a while to load: allow 60 s
	local i
	for ((i = 0; i < 6; i++)); do
		wait_udp_listen "$PROXY_ADDR" "$lport" "$PROXY_PID" && return 0
		kill -0 "$PROXY_PID" 2>/dev/null || break
	done
	log "switchboard did not come up, see $dir/proxy.out"
	return 1
}

start_proxy() { # target listen_port uas_port dir agents_dir with_seats
	if [[ "$1" == switchboard ]]; then start_switchboard "$2" "$3" "$4" "$5" "$6"; else start_kamailio "$2" "$3" "$4"; fi
}

stop_proxy() { # target
	# the switchboard drains open transactions on TERM (up to 40 s); INT is its fast stop.
	# `timeout` passes either signal on to the proxy.
	if [[ "$1" == switchboard ]]; then stop_pid "$PROXY_PID" INT; else stop_pid "$PROXY_PID"; fi
	forget_pid "$PROXY_PID"
}

# The agent population for COUNT users (cached per count in the work dir).
agents_dir() { # count
	local d="$WORK/agents-$1"
	[[ -f "$d/users.csv" ]] || python3 "$HERE/gen_agents.py" "$d" "$1" "$AGENT_FIRST" "$SB_REALM" 12345-province --seats
	echo "$d"
}

# SIPp runs benches/scenarios/register.xml (REGISTER, 401, REGISTER with digest credentials, 200)
# for `count` users of the injection file, bound to addr:port, at `rate` per second. The registrar
# records the REGISTER's Contact/source, i.e. that ip:port. Sets REG_OK, REG_FAILED, REG_WALL;
# the stats CSV and rtt file are left in `dir` (prefix `name`).
register_users() { # proxy_port addr port users_csv count rate dir name
	local lport="$1" addr="$2" port="$3" csv="$4" count="$5" rate="$6" dir="$7" name="$8" pid rc=0 t0 t1
	t0="$(date +%s.%N)"
	(cd "$dir" && exec timeout -k 5 "$((count / rate + 60))" \
		"${GEN_PREFIX[@]}" sipp -sf "$HERE/scenarios/register.xml" -i "$addr" -p "$port" -t u1 \
		-inf "$csv" -m "$count" -r "$rate" -rp 1000 -l "$((rate * 2 + 100))" \
		-recv_timeout 10000 -timeout "$((count / rate + 45))" -nostdin -trace_rtt -rtt_freq 1 \
		-trace_stat -stf "$dir/$name-stats.csv" -fd 1 \
		-trace_err -error_file "$dir/$name-errors.log" \
		"$PROXY_ADDR:$lport" >"$dir/$name.out" 2>&1 </dev/null) &
	pid=$!
	STARTED_PIDS+=("$pid")
	wait "$pid" || rc=$?
	forget_pid "$pid"
	t1="$(date +%s.%N)"
	REG_OK="$(csv_field "$dir/$name-stats.csv" 'SuccessfulCall(C)')"
	REG_FAILED=$((count - REG_OK))
	REG_WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
	[[ "$rc" -le 1 ]] || log "  SIPp REGISTER exit code $rc (see $dir/$name.out)"
}

# Proportional set size of a process tree in KiB (shared memory such as Kamailio's shm counted
# once, split among the processes that touch it), and plain RSS summed (double counts shm).
tree_mem_kib() { # pid -> "pss rss"
	local p pss=0 rss=0 a b
	for p in "$1" $(descendants "$1"); do
		a="$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null)" || true
		b="$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)" || true
		pss=$((pss + ${a:-0})); rss=$((rss + ${b:-0}))
	done
	echo "$pss $rss"
}

# Host-wide UDP receive-buffer overflows (/proc/net/snmp Udp RcvbufErrors): datagrams the kernel
# dropped because a socket's receive queue was full. Host-wide, so other traffic counts too.
udp_rcvbuf_errors() {
	awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c + 0 }' /proc/net/snmp
}

# Time the hypervisor ran something else while this VM's CPUs wanted to run (/proc/stat steal,
# all CPUs, ms; the kernel counts it in clock ticks, so it is coarse). A VM CPU taken away for a
# host tick stops the proxy for milliseconds: every call arriving meanwhile waits, whatever the
# proxy does, so the PDD rung reports it beside its percentiles.
host_steal_ms() {
	awk -v hz="$CLK_TCK" '$1 == "cpu" { printf "%d\n", $9 * 1000 / hz }' /proc/stat
}

# Per-socket drop counters (skmem d<N>) of the proxy's and the UAS's sockets, still open.
socket_drops() { # addr port
	ss -Huanm "src $1:$2" 2>/dev/null | tr -d '\n' | sed -n 's/.*skmem:([^)]*,d\([0-9]*\)).*/\1/p'
}

# Reads the SIPp statistics CSV (last line = final cumulative values).
csv_field() { # file column-name
	awk -F';' -v col="$2" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $0 }
		END { if (!c || last == "") { print 0; exit } split(last, f, ";"); print f[c] + 0 }
	' "$1" 2>/dev/null || echo 0
}

uac_sum() { # dir column-name: the column's last value summed over the rung's UAC stats files
	local f total=0
	for f in "$1"/uac_stats.csv "$1"/uac[0-9]*_stats.csv; do
		[[ -e "$f" ]] || continue
		total=$((total + $(csv_field "$f" "$2")))
	done
	echo "$total"
}

# Percentiles of one response-time distribution from SIPp -trace_rtt files
# (lines `date_ms;response_time_ms;rtd_no`): prints "n p50_ms p99_ms".
rtt_pct() { # rtd_no files...
	local no="$1"; shift
	python3 - "$no" "$@" <<'PY'
import sys
no, vals = sys.argv[1], []
for fn in sys.argv[2:]:
    for line in open(fn):
        f = line.strip().split(";")
        if len(f) >= 3 and f[2] == no:
            try:
                vals.append(float(f[1]))
            except ValueError:
                pass
vals.sort()
pct = lambda q: vals[min(len(vals) - 1, int(q * len(vals)))]
print(len(vals), "%.3f" % pct(0.5) if vals else "n/a", "%.3f" % pct(0.99) if vals else "n/a")
PY
}

RESULTS_TSV="$WORK/results.tsv"
printf 'target\trate\tcalls\tcreated\tok\tsipp_failed\tfailed\tfail_pct\tcpu_s\tcpu_us_per_call\twall_s\tudp_rcvbuf_errors\tproxy_sock_drops\tuas_sock_drops\tpdd_n\tpdd_p50_ms\tpdd_p99_ms\tans_p50_ms\tans_p99_ms\n' >"$RESULTS_TSV"
REG_TSV="$WORK/register.tsv"
printf 'target\trate\toffered\tok\tfailed\tfail_pct\twall_s\tok_per_s\tcpu_us_per_reg\tp50_ms\tp99_ms\n' >"$REG_TSV"
RSS_TSV="$WORK/rss.tsv"
printf 'target\tusers\tok\tpss0_kib\tpss1_kib\tpss2_kib\trss0_kib\trss2_kib\tbytes_per_reg_now\tbytes_per_reg_after_linger\n' >"$RSS_TSV"

# Every process lives at most this long (the UAC run, registrations and the RSS linger fit).
PROC_LIMIT=$((DURATION + REG_DURATION + RSS_WARMUP + RSS_REGS / RSS_RATE + RSS_LINGER + 300))

# tcpdump filter for the PDD rung: UDP on the bench's addresses whose payload starts "INVI" or
# "SIP/" ... "180 ": INVITEs and 180s only, 4 datagrams per call.
PDD_FILTER='udp and net 127.0.3.0/24 and (udp[8:4] = 0x494e5649 or (udp[8:4] = 0x5349502f and udp[16:4] = 0x31383020))'
PDD_TSV="$WORK/pdd.tsv"
printf 'target\trate\tfail_pct\tn\tadded_p50_ms\tadded_p99_ms\tadded_max_ms\tn_whole\twhole_p50_ms\twhole_p99_ms\twhole_max_ms\tagents\tcapture_dropped\thost_steal_ms\n' >"$PDD_TSV"

run_one() { # target rate [pdd: 1 = capture INVITEs and 180s, report PDD, not CPU]
	local target="$1" rate="$2" pdd="${3:-0}" dir lport uport cport calls t0 t1 c0 c1 s0 s1 rc=0 adir tcpd_pid=""
	dir="$WORK/$target-$rate"
	[[ "$pdd" == 1 ]] && dir="$WORK/$target-pdd-$rate"
	mkdir -p "$dir"
	calls=$((rate * DURATION))
	uport="$(free_udp_port "$UAS_ADDR")"
	lport="$(free_udp_port "$PROXY_ADDR")"
	cport="$(free_udp_port "$UAC_ADDR")"
	adir="$(agents_dir "$AGENTS")"

	# proxy first, then the agents register from the UAS's future ip:port, then the UAS
	start_proxy "$target" "$lport" "$uport" "$dir" "$adir" 1
	register_users "$lport" "$UAS_ADDR" "$uport" "$adir/users.csv" "$AGENTS" 1000 "$dir" register
	if [[ "$REG_FAILED" -ne 0 ]]; then
		# the rung still runs (with fewer agents logged in); the report's failed calls will show it
		log "$target: WARNING: $REG_FAILED of $AGENTS agent REGISTERs failed, see $dir/register*"
	fi
	log "$target: registered $REG_OK of $AGENTS agents from $UAS_ADDR:$uport in $REG_WALL s"
	start_uas "$uport" "$dir"
	sleep 1 # let the proxy finish forking and settle

	log "$target: $rate calls/s x ${DURATION}s = $calls calls (proxy $PROXY_ADDR:$lport pid $PROXY_PID, UAS $UAS_ADDR:$uport)"
	local u0 u1 pdrops udrops i
	if [[ "$pdd" == 1 ]]; then
		(exec timeout -k 5 "$((DURATION + 90))" "${GEN_PREFIX[@]}" tcpdump -i lo -n -s 1200 -B 65536 -U --immediate-mode \
			-w "$dir/pdd.pcap" "$PDD_FILTER" >"$dir/tcpdump.out" 2>&1 </dev/null) &
		tcpd_pid=$!
		STARTED_PIDS+=("$tcpd_pid")
		for ((i = 0; i < 50; i++)); do grep -q "listening on" "$dir/tcpdump.out" 2>/dev/null && break; sleep 0.1; done
		sleep 1 # "listening on" comes before the filter is in place on a loaded machine
	fi
	# profiling hooks (README "Profiling"): run with BENCH_PROXY_PIDS = the proxy's process tree
	if [[ -n "${BENCH_BEFORE_UAC:-}" ]]; then
		BENCH_PROXY_PIDS="$PROXY_PID $(descendants "$PROXY_PID" | tr '\n' ' ')" bash -c "$BENCH_BEFORE_UAC" || true
	fi
	u0="$(udp_rcvbuf_errors)"
	s0="$(host_steal_ms)"
	c0="$(tree_ticks "$PROXY_PID")"
	t0="$(date +%s.%N)"
	# UACS SIPp UACs share the rate and the calls (the first takes the remainders); each has its
	# own port, stats file (uac_stats.csv, uac1_stats.csv, ...) and output (uac.out, uac1.out, ...).
	local k kr km kp sfx uac_pids=() urc
	for ((k = 0; k < UACS; k++)); do
		kr=$((rate / UACS)); km=$((calls / UACS)); sfx=""
		if [[ "$k" -eq 0 ]]; then
			kr=$((kr + rate % UACS)); km=$((km + calls % UACS)); kp="$cport"
		else
			sfx="$k"; kp="$(free_udp_port "$UAC_ADDR")"
		fi
		(cd "$dir" && exec timeout -k 5 "$((DURATION + 60))" \
			"${GEN_PREFIX[@]}" sipp -sf "$HERE/scenarios/uac.xml" -i "$UAC_ADDR" -p "$kp" -t u1 \
			-s "$NUMBER" -r "$kr" -rp 1000 -m "$km" -l "$((kr * 4 + 100))" -d "$PAUSE_MS" \
			-recv_timeout 10000 -timeout "$((DURATION + 45))" \
			-trace_stat -stf "$dir/uac${sfx}_stats.csv" -fd 1 -trace_rtt -rtt_freq 1 \
			-trace_err -error_file "$dir/uac${sfx}_errors.log" -nostdin \
			"$PROXY_ADDR:$lport" >"$dir/uac${sfx}.out" 2>&1 </dev/null) &
		uac_pids+=("$!")
		STARTED_PIDS+=("$!")
	done
	for k in "${uac_pids[@]}"; do
		urc=0
		wait "$k" || urc=$?
		[[ "$urc" -le "$rc" ]] || rc="$urc"
		forget_pid "$k"
	done
	t1="$(date +%s.%N)"
	c1="$(tree_ticks "$PROXY_PID")"
	u1="$(udp_rcvbuf_errors)"
	s1="$(host_steal_ms)"
	if [[ -n "${BENCH_AFTER_UAC:-}" ]]; then
		BENCH_PROXY_PIDS="$PROXY_PID $(descendants "$PROXY_PID" | tr '\n' ' ')" bash -c "$BENCH_AFTER_UAC" || true
	fi
	pdrops="$(socket_drops "$PROXY_ADDR" "$lport")"
	udrops="$(socket_drops "$UAS_ADDR" "$uport")"
	ss -Huanm "src 127.0.3.0/24" >"$dir/sockets.txt" 2>&1 || true
	[[ "$rc" -le 1 ]] || log "  SIPp UAC exit code $rc (see $dir/uac.out)"

	stop_proxy "$target"
	stop_pid "$UAS_PID"; forget_pid "$UAS_PID"
	if [[ -n "$tcpd_pid" ]]; then
		sleep 1 # let tcpdump read what the kernel still holds before it is stopped
		stop_pid "$tcpd_pid" INT; forget_pid "$tcpd_pid"
		local okp dropped res
		okp="$(uac_sum "$dir" 'SuccessfulCall(C)')"
		dropped="$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$dir/tcpdump.out")"
		res="$(python3 "$HERE/pdd.py" "$dir/pdd.pcap" "$UAC_ADDR" "$PROXY_ADDR" "$UAS_ADDR")"
		printf '%s\t%s\t%.3f\t%s\t%s\t%s\n' "$target" "$rate" "$(awk -v n="$calls" -v ok="$okp" 'BEGIN { print 100 * (n - ok) / n }')" \
			"$(echo "$res" | tr ' ' '\t')" "${dropped:-?}" "$((s1 - s0))" >>"$PDD_TSV"
		tail -n1 "$PDD_TSV" | awk -F'\t' '{ printf "[bench]   PDD (capture): failed %s %%; added by the proxy p50 %s ms, p99 %s ms, max %s ms (n %s); at the UAC p50 %s p99 %s ms; %s agents rung; capture dropped %s; host steal %s ms\n", $3, $5, $6, $7, $4, $9, $10, $12, $13, $14 }' >&2
		return 0
	fi

	local created ok sfailed failed pdd ans
	created="$(uac_sum "$dir" 'TotalCallCreated')"
	ok="$(uac_sum "$dir" 'SuccessfulCall(C)')"
	sfailed="$(uac_sum "$dir" 'FailedCall(C)')"
	failed=$((calls - ok)) # anything that did not complete is a failure
	# rtd 1: INVITE sent -> 180 received (post-dial delay); rtd 2: INVITE sent -> 200 received
	pdd="$(rtt_pct 1 "$dir"/uac_*_rtt.csv)"
	ans="$(rtt_pct 2 "$dir"/uac_*_rtt.csv)"
	awk -v t="$target" -v r="$rate" -v n="$calls" -v cr="$created" -v ok="$ok" -v sf="$sfailed" \
		-v f="$failed" -v dt="$((c1 - c0))" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
		-v ud="$((u1 - u0))" -v pd="${pdrops:-?}" -v sd="${udrops:-?}" -v pdd="$pdd" -v ans="$ans" 'BEGIN {
		cpu = dt / hz
		split(pdd, p, " "); split(ans, a, " ")
		printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%.2f\t%s\t%.1f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t, r, n, cr, ok, sf, f,
			100 * f / n, cpu, (ok > 0 ? sprintf("%.0f", cpu * 1e6 / ok) : "n/a"), t1 - t0, ud, pd, sd,
			p[1], p[2], p[3], a[2], a[3]
	}' >>"$RESULTS_TSV"
	tail -n1 "$RESULTS_TSV" | awk -F'\t' '{ printf "[bench]   ok %d, failed %d (%s %%), proxy CPU %s s, %s CPU-us/call, UAC wall %s s; UDP rcvbuf drops %d (proxy socket %s, UAS socket %s); PDD p50 %s ms p99 %s ms (n %s)\n", $5, $7, $8, $9, $10, $11, $12, $13, $14, $16, $17, $15 }' >&2
}

# Digest-authenticated REGISTERs at `rate` for REG_DURATION s, from REG_ADDR (127.0.3.4), users cycling
# through REG_USERS configured agents (each SIPp call: REGISTER, 401, REGISTER + credentials, 200).
run_register() { # target rate
	local target="$1" rate="$2" dir lport cport count adir c0 c1 p
	dir="$WORK/$target-register-$rate"
	mkdir -p "$dir"
	count=$((rate * REG_DURATION))
	lport="$(free_udp_port "$PROXY_ADDR")"
	cport="$(free_udp_port "$REG_ADDR")"
	adir="$(agents_dir "$REG_USERS")"
	start_proxy "$target" "$lport" "$(free_udp_port "$UAS_ADDR")" "$dir" "$adir" 0
	sleep 1
	log "$target: $rate REGISTERs/s x ${REG_DURATION}s = $count (users $REG_USERS)"
	c0="$(tree_ticks "$PROXY_PID")"
	register_users "$lport" "$REG_ADDR" "$cport" "$adir/users.csv" "$count" "$rate" "$dir" reg
	c1="$(tree_ticks "$PROXY_PID")"
	stop_proxy "$target"
	p="$(rtt_pct 1 "$dir"/register_*_rtt.csv 2>/dev/null || echo "0 n/a n/a")"
	awk -v t="$target" -v r="$rate" -v n="$count" -v ok="$REG_OK" -v f="$REG_FAILED" -v w="$REG_WALL" \
		-v dt="$((c1 - c0))" -v hz="$CLK_TCK" -v p="$p" 'BEGIN {
		split(p, q, " ")
		printf "%s\t%d\t%d\t%d\t%d\t%.3f\t%.2f\t%.0f\t%s\t%s\t%s\n", t, r, n, ok, f, 100 * f / n, w,
			(w > 0 ? ok / w : 0), (ok > 0 ? sprintf("%.0f", dt / hz * 1e6 / ok) : "n/a"), q[2], q[3]
	}' >>"$REG_TSV"
	tail -n1 "$REG_TSV" | awk -F'\t' '{ printf "[bench]   ok %d, failed %d (%s %%) in %s s = %s/s, %s CPU-us/REGISTER\n", $4, $5, $6, $7, $8, $9 }' >&2
}

# Memory with RSS_REGS distinct registered users. Finished REGISTER transactions (and, for the
# switchboard, their nonces) stay for a while (Timer J = 32 s; Kamailio's tm ~5 s), and freed heap
# is not given back to the OS, so a bare before/after difference would count the transaction peak
# as registration state. Hence a warm-up first: RSS_RATE REGISTERs/s for RSS_WARMUP s cycling over
# 1,000 other users (the transaction population reaches its steady state), PSS then (before); then
# the RSS_REGS new users at the same rate (same transaction population), PSS right after (after),
# and again RSS_LINGER s later. bytes/registration = (after - before) / registered.
run_rss() { # target
	local target="$1" dir lport cport adir m0 m1 m2 wok
	dir="$WORK/$target-rss"
	mkdir -p "$dir"
	lport="$(free_udp_port "$PROXY_ADDR")"
	cport="$(free_udp_port "$REG_ADDR")"
	adir="$(agents_dir "$((RSS_REGS + 1000))")"
	head -n "$((RSS_REGS + 1))" "$adir/users.csv" >"$dir/users.csv"
	{ echo SEQUENTIAL; tail -n 1000 "$adir/users.csv"; } >"$dir/warm.csv"
	start_proxy "$target" "$lport" "$(free_udp_port "$UAS_ADDR")" "$dir" "$adir" 0
	sleep 2
	log "$target: warm-up, $RSS_RATE REGISTERs/s for ${RSS_WARMUP}s over 1,000 users; PSS $(tree_mem_kib "$PROXY_PID" | cut -d' ' -f1) KiB"
	register_users "$lport" "$REG_ADDR" "$cport" "$dir/warm.csv" "$((RSS_RATE * RSS_WARMUP))" "$RSS_RATE" "$dir" warm
	wok="$REG_OK"
	m0="$(tree_mem_kib "$PROXY_PID")"
	log "$target: registering $RSS_REGS users at $RSS_RATE/s; PSS before ${m0%% *} KiB (warm-up: $wok ok)"
	register_users "$lport" "$REG_ADDR" "$cport" "$dir/users.csv" "$RSS_REGS" "$RSS_RATE" "$dir" reg
	m1="$(tree_mem_kib "$PROXY_PID")"
	sleep "$RSS_LINGER"
	m2="$(tree_mem_kib "$PROXY_PID")"
	stop_proxy "$target"
	awk -v t="$target" -v n="$RSS_REGS" -v ok="$REG_OK" -v m0="$m0" -v m1="$m1" -v m2="$m2" 'BEGIN {
		split(m0, a, " "); split(m1, b, " "); split(m2, c, " ")
		printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\n", t, n, ok, a[1], b[1], c[1], a[2], c[2],
			(ok > 0 ? (b[1] - a[1]) * 1024 / ok : 0), (ok > 0 ? (c[1] - a[1]) * 1024 / ok : 0)
	}' >>"$RSS_TSV"
	tail -n1 "$RSS_TSV" | awk -F'\t' '{ printf "[bench]   %d of %d registered; PSS %d -> %d -> %d KiB; %s B/registration (after linger %s)\n", $3, $2, $4, $5, $6, $9, $10 }' >&2
}

log "work dir $WORK; targets: ${TARGETS[*]}; phases: $PHASES; rates: $RATES; ${DURATION}s each; $WORKERS workers"
for target in "${TARGETS[@]}"; do
	if has_phase calls; then
		for rate in $RATES; do run_one "$target" "$rate"; done
	fi
	if has_phase pdd; then
		prate="$PDD_RATE"
		if [[ "$prate" == auto ]]; then
			prate="$(awk -F'\t' -v t="$target" 'NR > 1 && $1 == t && $8 < 0.1 && $2 > b { b = $2 } END { print int(b / 2) }' "$RESULTS_TSV")"
			[[ "$prate" -ge 1 ]] || prate="$(echo $RATES | tr ' ' '\n' | sort -n | head -1)"
		fi
		run_one "$target" "$prate" 1
	fi
	if has_phase register; then
		for rate in $REG_RATES; do run_register "$target" "$rate"; done
	fi
	if has_phase rss && [[ "$RSS_REGS" -gt 0 ]]; then
		run_rss "$target"
	fi
done

# ---- report ------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
REPORT="$RESULTS_DIR/bench-$STAMP.md"
cp "$RESULTS_TSV" "$RESULTS_DIR/bench-$STAMP.tsv"
cp "$REG_TSV" "$RESULTS_DIR/bench-$STAMP.register.tsv"
cp "$RSS_TSV" "$RESULTS_DIR/bench-$STAMP.rss.tsv"
cp "$PDD_TSV" "$RESULTS_DIR/bench-$STAMP.pdd.tsv"

{
	echo "# switchboard macro bench, $(date -u +'%Y-%m-%d %H:%M UTC')"
	echo
	echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $(uname -sr); load average before the report: $(cut -d' ' -f1-3 /proc/loadavg). Proxies' scheduling (both targets): ${PROXY_SCHED} (\`--proxy-sched\`)."
	echo "SIPp UAC $UAC_ADDR ($UACS SIPp UAC process(es) sharing the rate, \`--uacs\`) -> proxy $PROXY_ADDR -> SIPp UAS $UAS_ADDR, UDP, $WORKERS proxy workers. Pinning: $PIN (\`--pin\`)."
	if has_phase calls; then
		echo
		echo "## calls"
		echo
		echo "Dialled: $NUMBER (a merge line) from the trunk; $AGENTS agents registered from the UAS; ${DURATION}s per rate,"
		echo "pause ${PAUSE_MS} ms between ACK and BYE. Failed = calls not completed (of rate x duration)."
		echo "CPU = proxy process tree utime+stime. PDD = SIPp rtd INVITE sent -> 180 received (UAC side,"
		echo "includes the UAS's answer time and both SIPp's loop latency); answer = INVITE -> 200."
		echo "UDP rcvbuf drops: host-wide RcvbufErrors during the UAC run; proxy's and UAS's socket drop counters."
		for target in "${TARGETS[@]}"; do
			echo
			echo "### $target"
			echo
			echo "| offered calls/s | calls | successful | failed % | CPU-µs/call | PDD p50 ms | PDD p99 ms | answer p50 ms | answer p99 ms | UAC wall s | UDP drops (host; proxy; UAS) |"
			echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
			awk -F'\t' -v t="$target" 'NR > 1 && $1 == t {
				printf "| %d | %d | %d | %.2f | %s | %s | %s | %s | %s | %s | %s; %s; %s |\n", $2, $3, $5, $8, $10, $16, $17, $18, $19, $11, $12, $13, $14 }' "$RESULTS_TSV"
			echo
			awk -F'\t' -v t="$target" 'NR > 1 && $1 == t && $8 < 0.1 && $2 > best { best = $2 }
				END { if (best) printf "Highest rate with < 0.1 %% failed calls: **%d calls/s**\n", best
				      else print "Highest rate with < 0.1 % failed calls: **none on this ladder**" }' "$RESULTS_TSV"
		done
		if [[ "${#TARGETS[@]}" -eq 2 ]]; then
			echo
			echo "### side by side"
			echo
			echo "| offered calls/s | kamailio failed % | kamailio CPU-µs/call | kamailio PDD p99 ms | switchboard failed % | switchboard CPU-µs/call | switchboard PDD p99 ms | CPU ratio sb/kam | PDD p99 sb − kam ms |"
			echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
			awk -F'\t' 'NR > 1 { k = $1 SUBSEP $2; fp[k] = $8; us[k] = $10; p99[k] = $17; rates[$2] = 1 }
				END {
					n = 0; for (r in rates) list[++n] = r + 0
					for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (list[j] < list[i]) { x = list[i]; list[i] = list[j]; list[j] = x }
					for (i = 1; i <= n; i++) {
						r = list[i]; ka = "kamailio" SUBSEP r; sb = "switchboard" SUBSEP r
						ratio = (us[ka] + 0 > 0 && us[sb] + 0 > 0) ? sprintf("%.2f", us[sb] / us[ka]) : "n/a"
						d = (p99[ka] != "n/a" && p99[sb] != "n/a" && p99[ka] != "" && p99[sb] != "") ? sprintf("%+.3f", p99[sb] - p99[ka]) : "n/a"
						printf "| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", r, fp[ka], us[ka], p99[ka], fp[sb], us[sb], p99[sb], ratio, d
					}
				}' "$RESULTS_TSV"
			echo
			awk -F'\t' 'NR > 1 && $8 < 0.1 { if ($2 > best[$1]) best[$1] = $2 }
				END {
					k = best["kamailio"] + 0; s = best["switchboard"] + 0
					printf "Highest rate with < 0.1 %% failed: kamailio %d, switchboard %d calls/s; ratio sb/kam %s\n",
						k, s, (k > 0 ? sprintf("%.2f", s / k) : "n/a")
				}' "$RESULTS_TSV"
			echo "(the ladder bounds both: a target passing the top rung may go higher)"
		fi
	fi
	if has_phase pdd; then
		echo
		echo "## post-dial delay (packet capture)"
		echo
		echo "One more call rung per target at half its highest passing rate (or --pdd-rate), with tcpdump on lo"
		echo "keeping INVITEs and 180s. Per call: added by the proxy = (INVITE out to the UAS − INVITE in from the"
		echo "UAC) + (180 out to the UAC − 180 in from the UAS), kernel timestamps, the UAS's own time excluded;"
		echo "at the UAC = 180 to the UAC − INVITE from the UAC. Agents = distinct users the proxy sent INVITEs to."
		echo
		echo "Host steal = time the hypervisor took this VM's CPUs away during the UAC's run (/proc/stat, all"
		echo "CPUs, coarse): it stops the proxy for a host tick (~4 ms here) at a time."
		echo
		echo "| target | calls/s | failed % | calls measured | added p50 ms | added p99 ms | added max ms | UAC-side p50 ms | UAC-side p99 ms | agents | capture drops | host steal ms |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $9, $10, $12, $13, $14 }' "$PDD_TSV"
	fi
	if has_phase register; then
		echo
		echo "## digest-authenticated REGISTERs"
		echo
		echo "SIPp from one socket, users cycling over $REG_USERS agents, ${REG_DURATION}s per rate; one = REGISTER, 401,"
		echo "REGISTER with credentials, 200. p50/p99 = first REGISTER sent -> 200 received."
		echo
		echo "| target | offered/s | REGISTERs | ok | failed % | wall s | ok/s | CPU-µs/REGISTER | p50 ms | p99 ms |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' 'NR > 1 { printf "| %s | %d | %d | %d | %.2f | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $6, $7, $8, $9, $10, $11 }' "$REG_TSV"
		echo
		awk -F'\t' 'NR > 1 && $6 < 0.1 { if ($2 > best[$1]) { best[$1] = $2; got[$1] = $8 } }
			NR > 1 { cpu[$1] += $9; nc[$1]++ }
			END {
				for (t in nc) printf "%s: highest offered REGISTER rate with < 0.1 %% failed: **%d/s** (achieved %s/s)\n", t, best[t], (got[t] == "" ? "n/a" : got[t])
				if (best["kamailio"] > 0 && best["switchboard"] != "") printf "ratio sb/kam: %.2f\n", best["switchboard"] / best["kamailio"]
			}' "$REG_TSV"
		echo "(the ladder bounds both: a target passing the top rate may go higher)"
	fi
	if has_phase rss && [[ "$RSS_REGS" -gt 0 ]]; then
		echo
		echo "## memory per registration"
		echo
		echo "$RSS_REGS distinct users REGISTER (digest) at $RSS_RATE/s. PSS of the proxy's process tree (smaps_rollup;"
		echo "Kamailio's shm counted once). 'before' = after a ${RSS_WARMUP} s warm-up of REGISTERs at the same rate over"
		echo "1,000 other users (transaction and nonce population at steady state); 'after' = right after the last"
		echo "new user, and ${RSS_LINGER} s later. bytes/registration = (after − before) / registered."
		echo "The switchboard's users are configured agents (their config is in the 'before' figure)."
		echo
		echo "| target | users | registered | PSS before KiB | PSS after KiB | PSS +${RSS_LINGER}s KiB | bytes/registration (right after) | bytes/registration (+${RSS_LINGER}s) |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' 'NR > 1 { printf "| %s | %d | %d | %d | %d | %d | %s | %s |\n", $1, $2, $3, $4, $5, $6, $9, $10 }' "$RSS_TSV"
	fi
} | tee "$REPORT"

log "report: $REPORT (raw: $RESULTS_DIR/bench-$STAMP*.tsv, logs: $WORK)"
