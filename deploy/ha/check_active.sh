#!/bin/sh
# Exit 0 when this node's switchboard holds the HA lock (its metrics say switchboard_ha_active 1).
# The metrics listener is loopback-only by default; keep it that way.
curl -fsS --max-time 1 http://127.0.0.1:8060/metrics | grep -q '^switchboard_ha_active 1'
