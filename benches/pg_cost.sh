#!/bin/bash
# Server CPU and WAL per deposit on PostgreSQL, over one W7 run (1, 2 and 4 bank processes).
export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
PSQL="psql -h 127.0.0.1 -U postgres -d test -Atc"
pm=$(head -1 "$($PSQL 'show data_directory')/postmaster.pid")
cpu() { # clock ticks of the postmaster, its reaped children and its live children
  local t; t=$(awk '{print $14+$15+$16+$17}' /proc/$pm/stat)
  for c in $(pgrep -P $pm); do t=$((t + $(awk '{print $14+$15}' /proc/$c/stat 2>/dev/null || echo 0))); done
  echo $t; }
lsn0=$($PSQL "select pg_current_wal_lsn()"); c0=$(cpu); t0=$(date +%s.%N)
cd "$(dirname "$0")/.." && ./target/release/rewind-bench --quick --no-peer --backends postgres --workloads W7 --out /tmp/pgcost.md >/tmp/pgcost.log 2>&1
c1=$(cpu); t1=$(date +%s.%N)
wal=$($PSQL "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')")
deposits=$(grep -h "^| W7" /tmp/pgcost.md | awk -F'|' '{gsub(/[ ,]/,"",$4); print $4*5}' | paste -sd+ | bc)
echo "ticks=$((c1-c0)) (100/s) wall=$(echo "$t1-$t0" | bc) wal_bytes=$wal deposits~=$deposits accounts=3000"
