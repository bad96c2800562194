#!/usr/bin/env bash
# Service recovery (the guide's Restart-KolosalService): when the server is
# not healthy, restart it, wait for it to become healthy again, and alert
# Alertmanager when it does not.
#
# Environment:
#   KOLOSAL_URL          server to check (default http://localhost:8080)
#   KOLOSAL_RESTART_CMD  how to restart it (default: systemctl restart kolosal)
#   RECOVERY_WAIT        seconds to wait for health after the restart (default 300:
#                        models load before the server reports ok)
#   ALERTMANAGER_URL     as in health-check.sh
# Exit status: 0 healthy (already, or after the restart), 1 still unhealthy
# (alert sent), 2 still unhealthy and the alert could not be sent.
set -uo pipefail

KOLOSAL_URL=${KOLOSAL_URL:-http://localhost:8080}
KOLOSAL_RESTART_CMD=${KOLOSAL_RESTART_CMD:-systemctl restart kolosal}
RECOVERY_WAIT=${RECOVERY_WAIT:-300}
ALERTMANAGER_URL=${ALERTMANAGER_URL:-http://alertmanager:9093}

healthy() {
  [ "$(curl -s --max-time 10 "${KOLOSAL_URL%/}/v1/health" | jq -r '.status // empty' 2>/dev/null)" = "ok" ]
}

if healthy; then
  exit 0
fi

echo "Kolosal Server unhealthy: restarting ($KOLOSAL_RESTART_CMD)" >&2
if sh -c "$KOLOSAL_RESTART_CMD"; then
  deadline=$((SECONDS + RECOVERY_WAIT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if healthy; then
      echo "Service restarted successfully"
      exit 0
    fi
    sleep 2
  done
  reason="not healthy ${RECOVERY_WAIT}s after the restart"
else
  reason="the restart command failed"
fi

echo "error: Kolosal Server restart failed: $reason" >&2
payload=$(jq -n --arg instance "$KOLOSAL_URL" --arg reason "$reason" '[{
  labels: {
    alertname: "KolosalServerRestartFailed",
    service: "kolosal-server",
    severity: "critical",
    instance: $instance
  },
  annotations: {
    summary: "Kolosal Server restart failed",
    description: $reason
  }
}]')
curl -sS --fail --max-time 10 -X POST "${ALERTMANAGER_URL%/}/api/v2/alerts" \
  -H "Content-Type: application/json" -d "$payload" >/dev/null || exit 2
exit 1
