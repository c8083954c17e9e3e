#!/usr/bin/env bash
# Macro benchmark: a stateful SIP proxy between a SIPp UAC and a SIPp UAS on loopback.
#
#   benches/run.sh [--target kamailio|switchboard|both] [--rates "200 500 1000 ..."]
#                  [--duration S] [--workers N] [--number USER]
#                  [--switchboard-bin PATH] [--switchboard-config PATH]
#                  [--switchboard-cmd 'COMMAND'] [--results-dir DIR] [--no-build]
#
# For every target and every rate of the ladder it starts a fresh SIPp UAS, a fresh proxy,
# then a SIPp UAC that places rate*duration calls at that rate (bounded by -m, SIPp's own
# -timeout and an outer `timeout`). It reports successful/failed calls and the proxy's CPU
# time (utime+stime of the whole process tree, from /proc) per successful call.
# The switchboard target defaults to target/release/switchboard (built by cargo first, unless
# --no-build or another binary/command is given) and benches/switchboard.bench.toml; in each
# rung the UAS's ip:port first REGISTERs as agent NUMBER (digest), then the UAS starts there.
# See benches/README.md for the switchboard interface.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

TARGET=kamailio
RATES="200 500 1000 2000 3000"
DURATION=10
WORKERS="${BENCH_WORKERS:-2}"
NUMBER="${BENCH_NUMBER:-12345}"
PAUSE_MS="${BENCH_PAUSE_MS:-100}"
SHM_MB="${BENCH_KAMAILIO_SHM_MB:-1024}"
SWITCHBOARD_BIN_DEFAULT="$ROOT/target/release/switchboard"
SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$SWITCHBOARD_BIN_DEFAULT}"
SWITCHBOARD_CONFIG="${SWITCHBOARD_CONFIG:-}"
SWITCHBOARD_CMD="${SWITCHBOARD_CMD:-}"
# The agent account the SIPp UAS registers as (user = NUMBER) before the load, and the realm.
SB_REALM="${BENCH_SWITCHBOARD_REALM:-12345.qh}"
SB_PASSWORD="${BENCH_SWITCHBOARD_PASSWORD:-}" # default bench-<NUMBER>, set after the options
SB_REGISTER="${BENCH_SWITCHBOARD_REGISTER:-1}"
BUILD="${BENCH_BUILD:-1}"
RESULTS_DIR="${BENCH_RESULTS_DIR:-$HERE/results}"

PROXY_ADDR=127.0.3.1
UAS_ADDR=127.0.3.2
UAC_ADDR=127.0.3.3

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
	case "$1" in
		--target) TARGET="$2"; shift 2 ;;
		--rates) RATES="$2"; shift 2 ;;
		--duration) DURATION="$2"; shift 2 ;;
		--workers) WORKERS="$2"; shift 2 ;;
		--number) NUMBER="$2"; shift 2 ;;
		--switchboard-bin) SWITCHBOARD_BIN="$2"; shift 2 ;;
		--switchboard-config) SWITCHBOARD_CONFIG="$2"; shift 2 ;;
		--switchboard-cmd) SWITCHBOARD_CMD="$2"; shift 2 ;;
		--results-dir) RESULTS_DIR="$2"; shift 2 ;;
		--no-build) BUILD=0; shift ;;
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
for r in $RATES; do
	[[ "$r" =~ ^[0-9]+$ && "$r" -ge 1 && "$r" -le 100000 ]] || { echo "bad rate: $r" >&2; exit 2; }
done

for tool in sipp timeout pgrep ss python3; do
	command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
if [[ " ${TARGETS[*]} " == *" kamailio "* ]]; then
	command -v kamailio >/dev/null || { echo "missing kamailio (apt-get install -y kamailio)" >&2; exit 2; }
fi
SB_PASSWORD="${SB_PASSWORD:-bench-$NUMBER}"
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
if [[ " ${TARGETS[*]} " == *" switchboard "* && "$SB_REGISTER" == 1 ]]; then
	[[ -f "$ROOT/tests/sipp/register.xml" ]] || { echo "missing $ROOT/tests/sipp/register.xml" >&2; exit 2; }
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
		sipp -sf "$HERE/scenarios/uas.xml" -i "$UAS_ADDR" -p "$port" -t u1 \
		-nostdin -trace_err -error_file "$dir/uas_errors.log" \
		>"$dir/uas.out" 2>&1 </dev/null) &
	UAS_PID=$!
	STARTED_PIDS+=("$UAS_PID")
	wait_udp_listen "$UAS_ADDR" "$port" "$UAS_PID" || { log "SIPp UAS did not come up, see $dir/uas.out"; return 1; }
}

start_kamailio() { # listen_port uas_port dir -> sets PROXY_PID
	local lport="$1" uport="$2" dir="$3"
	mkdir -p "$dir/run"
	(cd "$dir" && exec timeout -k 5 "$((DURATION + 120))" \
		kamailio -f "$HERE/kamailio/kamailio.cfg" -DD -E \
		-l "udp:$PROXY_ADDR:$lport" -n "$WORKERS" \
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
#   BENCH_UAS_ADDR BENCH_UAS_PORT BENCH_UAS            where calls to BENCH_NUMBER go
#   BENCH_NUMBER BENCH_WORKERS BENCH_TMPDIR            dialled user part, workers, scratch dir
#   BENCH_ROOT                                         the repository root (the command's cwd
#                                                      is BENCH_TMPDIR, so use absolute paths)
#   SWITCHBOARD_BIN SWITCHBOARD_CONFIG                 binary; rendered config (see below)
# If --switchboard-config is given, that file is treated as a template: the tokens
# @LISTEN_ADDR@ @LISTEN_PORT@ @UAS_ADDR@ @UAS_PORT@ @NUMBER@ @WORKERS@ @TMPDIR@ are replaced
# and SWITCHBOARD_CONFIG points at the rendered copy in the run's temp dir; so are @REALM@
# (BENCH_SWITCHBOARD_REALM, default 12345.qh) and @HA1_MD5@ = MD5(NUMBER:REALM:PASSWORD) with
# PASSWORD = BENCH_SWITCHBOARD_PASSWORD (default bench-NUMBER), for the agent the UAS registers as.
# Default command: "$SWITCHBOARD_BIN" run -c "$SWITCHBOARD_CONFIG"
start_switchboard() { # listen_port uas_port dir -> sets PROXY_PID
	local lport="$1" uport="$2" dir="$3" cfg="" cmd
	if [[ -n "$SWITCHBOARD_CONFIG" ]]; then
		cfg="$dir/switchboard.conf"
		sed -e "s|@LISTEN_ADDR@|$PROXY_ADDR|g" -e "s|@LISTEN_PORT@|$lport|g" \
			-e "s|@UAS_ADDR@|$UAS_ADDR|g" -e "s|@UAS_PORT@|$uport|g" \
			-e "s|@NUMBER@|$NUMBER|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@TMPDIR@|$dir|g" \
			-e "s|@ROOT@|$ROOT|g" \
			-e "s|@REALM@|$SB_REALM|g" -e "s|@HA1_MD5@|$(ha1_md5 "$NUMBER" "$SB_REALM" "$SB_PASSWORD")|g" \
			"$SWITCHBOARD_CONFIG" >"$cfg"
	fi
	cmd="${SWITCHBOARD_CMD:-exec \"\$SWITCHBOARD_BIN\" run -c \"\$SWITCHBOARD_CONFIG\"}"
	(cd "$dir" &&
		export BENCH_LISTEN_ADDR="$PROXY_ADDR" BENCH_LISTEN_PORT="$lport" \
			BENCH_LISTEN="$PROXY_ADDR:$lport" BENCH_UAS_ADDR="$UAS_ADDR" \
			BENCH_UAS_PORT="$uport" BENCH_UAS="$UAS_ADDR:$uport" BENCH_NUMBER="$NUMBER" \
			BENCH_WORKERS="$WORKERS" BENCH_TMPDIR="$dir" BENCH_ROOT="$ROOT" \
			SWITCHBOARD_BIN="$SWITCHBOARD_BIN" SWITCHBOARD_CONFIG="$cfg" &&
		exec timeout -k 5 "$((DURATION + 120))" bash -c "$cmd" \
		>"$dir/proxy.out" 2>&1 </dev/null) &
	PROXY_PID=$!
	STARTED_PIDS+=("$PROXY_PID")
	wait_udp_listen "$PROXY_ADDR" "$lport" "$PROXY_PID" || { log "switchboard did not come up, see $dir/proxy.out"; return 1; }
}

ha1_md5() { # user realm password
	python3 -c 'import hashlib, sys; print(hashlib.md5(":".join(sys.argv[1:4]).encode()).hexdigest())' "$@"
}

# The switchboard routes a trunk call to the dialled agent's registered contact, so the UAS's
# ip:port must be registered first: SIPp runs tests/sipp/register.xml (REGISTER, 401, REGISTER with
# digest credentials, 200) bound to that very ip:port, exits, and the UAS then binds it. The
# registrar records the REGISTER's source address, which is where the INVITEs will go.
register_agent() { # listen_port uas_port dir
	local lport="$1" uport="$2" dir="$3" pid rc=0
	(cd "$dir" && exec timeout -k 5 20 \
		sipp -sf "$ROOT/tests/sipp/register.xml" -i "$UAS_ADDR" -p "$uport" -t u1 \
		-s "$NUMBER" -au "$NUMBER" -ap "$SB_PASSWORD" -m 1 \
		-recv_timeout 5000 -timeout 15 -nostdin \
		-trace_msg -message_file "$dir/register_msgs.log" \
		-trace_err -error_file "$dir/register_errors.log" \
		"$PROXY_ADDR:$lport" >"$dir/register.out" 2>&1 </dev/null) &
	pid=$!
	STARTED_PIDS+=("$pid")
	wait "$pid" || rc=$?
	forget_pid "$pid"
	if [[ "$rc" -ne 0 ]]; then
		log "REGISTER of $NUMBER from $UAS_ADDR:$uport failed (SIPp exit $rc), see $dir/register_msgs.log"
		return 1
	fi
	log "registered $NUMBER -> $UAS_ADDR:$uport"
}

# Host-wide UDP receive-buffer overflows (/proc/net/snmp Udp RcvbufErrors): datagrams the kernel
# dropped because a socket's receive queue was full. Host-wide, so other traffic counts too.
udp_rcvbuf_errors() {
	awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c + 0 }' /proc/net/snmp
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
	' "$1"
}

RESULTS_TSV="$WORK/results.tsv"
printf 'target\trate\tcalls\tcreated\tok\tsipp_failed\tfailed\tfail_pct\tcpu_s\tcpu_us_per_call\twall_s\tudp_rcvbuf_errors\tproxy_sock_drops\tuas_sock_drops\n' >"$RESULTS_TSV"

run_one() { # target rate
	local target="$1" rate="$2" dir lport uport cport calls t0 t1 c0 c1 rc=0
	dir="$WORK/$target-$rate"
	mkdir -p "$dir"
	calls=$((rate * DURATION))
	uport="$(free_udp_port "$UAS_ADDR")"
	lport="$(free_udp_port "$PROXY_ADDR")"
	cport="$(free_udp_port "$UAC_ADDR")"

	if [[ "$target" == switchboard ]]; then
		# proxy first, then the agent (the UAS's future ip:port) registers, then the UAS
		start_switchboard "$lport" "$uport" "$dir"
		if [[ "$SB_REGISTER" == 1 ]]; then
			register_agent "$lport" "$uport" "$dir"
		fi
		start_uas "$uport" "$dir"
	else
		start_uas "$uport" "$dir"
		"start_$target" "$lport" "$uport" "$dir"
	fi
	sleep 1 # let the proxy finish forking and settle

	log "$target: $rate calls/s x ${DURATION}s = $calls calls (proxy $PROXY_ADDR:$lport pid $PROXY_PID, UAS $UAS_ADDR:$uport)"
	local u0 u1 pdrops udrops
	u0="$(udp_rcvbuf_errors)"
	c0="$(tree_ticks "$PROXY_PID")"
	t0="$(date +%s.%N)"
	(cd "$dir" && exec timeout -k 5 "$((DURATION + 60))" \
		sipp -sf "$HERE/scenarios/uac.xml" -i "$UAC_ADDR" -p "$cport" -t u1 \
		-s "$NUMBER" -r "$rate" -rp 1000 -m "$calls" -l "$((rate * 4 + 100))" -d "$PAUSE_MS" \
		-recv_timeout 10000 -timeout "$((DURATION + 45))" \
		-trace_stat -stf "$dir/uac_stats.csv" -fd 1 \
		-trace_err -error_file "$dir/uac_errors.log" -nostdin \
		"$PROXY_ADDR:$lport" >"$dir/uac.out" 2>&1 </dev/null) &
	local uac_pid=$!
	STARTED_PIDS+=("$uac_pid")
	wait "$uac_pid" || rc=$?
	forget_pid "$uac_pid"
	t1="$(date +%s.%N)"
	c1="$(tree_ticks "$PROXY_PID")"
	u1="$(udp_rcvbuf_errors)"
	pdrops="$(socket_drops "$PROXY_ADDR" "$lport")"
	udrops="$(socket_drops "$UAS_ADDR" "$uport")"
	ss -Huanm "src 127.0.3.0/24" >"$dir/sockets.txt" 2>&1 || true
	[[ "$rc" -le 1 ]] || log "  SIPp UAC exit code $rc (see $dir/uac.out)"

	# the switchboard drains open transactions on TERM (up to 40 s); INT is its fast stop.
	# `timeout` passes either signal on to the proxy.
	if [[ "$target" == switchboard ]]; then stop_pid "$PROXY_PID" INT; else stop_pid "$PROXY_PID"; fi
	forget_pid "$PROXY_PID"
	stop_pid "$UAS_PID"; forget_pid "$UAS_PID"

	local created ok sfailed failed
	created="$(csv_field "$dir/uac_stats.csv" 'TotalCallCreated')"
	ok="$(csv_field "$dir/uac_stats.csv" 'SuccessfulCall(C)')"
	sfailed="$(csv_field "$dir/uac_stats.csv" 'FailedCall(C)')"
	failed=$((calls - ok)) # anything that did not complete is a failure
	awk -v t="$target" -v r="$rate" -v n="$calls" -v cr="$created" -v ok="$ok" -v sf="$sfailed" \
		-v f="$failed" -v dt="$((c1 - c0))" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
		-v ud="$((u1 - u0))" -v pd="${pdrops:-?}" -v sd="${udrops:-?}" 'BEGIN {
		cpu = dt / hz
		printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%.2f\t%s\t%.1f\t%d\t%s\t%s\n", t, r, n, cr, ok, sf, f,
			100 * f / n, cpu, (ok > 0 ? sprintf("%.0f", cpu * 1e6 / ok) : "n/a"), t1 - t0, ud, pd, sd
	}' >>"$RESULTS_TSV"
	tail -n1 "$RESULTS_TSV" | awk -F'\t' '{ printf "[bench]   ok %d, failed %d (%s %%), proxy CPU %s s, %s CPU-us/call, UAC wall %s s; UDP rcvbuf drops %d (proxy socket %s, UAS socket %s)\n", $5, $7, $8, $9, $10, $11, $12, $13, $14 }' >&2
}

log "work dir $WORK; targets: ${TARGETS[*]}; rates: $RATES; ${DURATION}s each; $WORKERS workers"
for target in "${TARGETS[@]}"; do
	for rate in $RATES; do
		run_one "$target" "$rate"
	done
done

# ---- report ------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
REPORT="$RESULTS_DIR/bench-$STAMP.md"
cp "$RESULTS_TSV" "$RESULTS_DIR/bench-$STAMP.tsv"

{
	echo "# switchboard macro bench, $(date -u +'%Y-%m-%d %H:%M UTC')"
	echo
	echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $(uname -sr)."
	echo "SIPp UAC $UAC_ADDR -> proxy $PROXY_ADDR -> SIPp UAS $UAS_ADDR, UDP, ${DURATION}s per rate,"
	echo "$WORKERS proxy workers, pause ${PAUSE_MS} ms between ACK and BYE, dialled user $NUMBER."
	echo "Failed = calls not completed successfully (of rate x duration). CPU = proxy process tree utime+stime."
	echo "UDP rcvbuf drops: host-wide /proc/net/snmp RcvbufErrors during the UAC run; then the skmem drop"
	echo "counters of the proxy's and the UAS's sockets at its end (the UAC's socket is closed by then)."
	for target in "${TARGETS[@]}"; do
		echo
		echo "## $target"
		echo
		echo "| offered calls/s | calls | successful | failed | failed % | CPU-µs/call | UAC wall s | UDP rcvbuf drops (host; proxy sock; UAS sock) |"
		echo "|---:|---:|---:|---:|---:|---:|---:|---|"
		awk -F'\t' -v t="$target" 'NR > 1 && $1 == t {
			printf "| %d | %d | %d | %d | %.2f | %s | %s | %s; %s; %s |\n", $2, $3, $5, $7, $8, $10, $11, $12, $13, $14 }' "$RESULTS_TSV"
		echo
		awk -F'\t' -v t="$target" 'NR > 1 && $1 == t && $8 < 0.1 && $2 > best { best = $2 }
			END { if (best) printf "Highest rate with < 0.1 %% failed calls: **%d calls/s**\n", best
			      else print "Highest rate with < 0.1 % failed calls: **none on this ladder**" }' "$RESULTS_TSV"
	done
	if [[ "${#TARGETS[@]}" -eq 2 ]]; then
		echo
		echo "## side by side"
		echo
		echo "| offered calls/s | kamailio failed % | kamailio CPU-µs/call | switchboard failed % | switchboard CPU-µs/call | CPU ratio sb/kam |"
		echo "|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' 'NR > 1 { k = $1 SUBSEP $2; fp[k] = $8; us[k] = $10; rates[$2] = 1 }
			END {
				n = 0; for (r in rates) list[++n] = r + 0
				for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (list[j] < list[i]) { x = list[i]; list[i] = list[j]; list[j] = x }
				for (i = 1; i <= n; i++) {
					r = list[i]; ka = "kamailio" SUBSEP r; sb = "switchboard" SUBSEP r
					ratio = (us[ka] + 0 > 0 && us[sb] + 0 > 0) ? sprintf("%.2f", us[sb] / us[ka]) : "n/a"
					printf "| %d | %s | %s | %s | %s | %s |\n", r, fp[ka], us[ka], fp[sb], us[sb], ratio
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
} | tee "$REPORT"

log "report: $REPORT (raw: $RESULTS_DIR/bench-$STAMP.tsv, logs: $WORK)"
