#!/usr/bin/env bash
# Kolosal health check (the guide's script): asks /v1/health and, unless the
# answer is {"status": "ok"}, posts a KolosalServerDown alert to Alertmanager.
# Run it from cron or a systemd timer, e.g. every minute:
#   * * * * * KOLOSAL_URL=http://127.0.0.1:8080 /opt/kolosal/scripts/ops/health-check.sh
#
# Environment:
#   KOLOSAL_URL       server to check (default http://localhost:8080)
#   ALERTMANAGER_URL  Alertmanager (default http://alertmanager:9093); alerts go
#                     to its /api/v2/alerts (the guide's /api/v1 was removed
#                     from Alertmanager in 0.27; the payload is the same)
#   KOLOSAL_API_KEY   sent as a bearer token when set (needed only when the
#                     server has security.public_health: false)
#   HEALTH_TIMEOUT    seconds to wait for the answer (default 10)
# Exit status: 0 healthy, 1 unhealthy (alert sent), 2 unhealthy and the alert
# could not be sent. Needs curl and jq.
set -uo pipefail

KOLOSAL_URL=${KOLOSAL_URL:-http://localhost:8080}
ALERTMANAGER_URL=${ALERTMANAGER_URL:-http://alertmanager:9093}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-10}

auth=()
if [ -n "${KOLOSAL_API_KEY:-}" ]; then
  auth=(-H "Authorization: Bearer ${KOLOSAL_API_KEY}")
fi

HEALTH=$(curl -s --max-time "$HEALTH_TIMEOUT" "${auth[@]}" "${KOLOSAL_URL%/}/v1/health")
STATUS=$(jq -r '.status // empty' <<<"$HEALTH" 2>/dev/null)

if [ "$STATUS" = "ok" ]; then
  exit 0
fi

echo "ALERT: Kolosal Server unhealthy (status: ${STATUS:-unreachable})" >&2
payload=$(jq -n --arg instance "$KOLOSAL_URL" --arg status "${STATUS:-unreachable}" '[{
  labels: {
    alertname: "KolosalServerDown",
    service: "kolosal-server",
    severity: "critical",
    instance: $instance
  },
  annotations: {
    summary: "Kolosal Server unhealthy",
    description: ("health status: " + $status)
  }
}]')
if ! curl -sS --fail --max-time 10 -X POST "${ALERTMANAGER_URL%/}/api/v2/alerts" \
     -H "Content-Type: application/json" -d "$payload" >/dev/null; then
  echo "error: could not send the alert to $ALERTMANAGER_URL" >&2
  exit 2
fi
exit 1
