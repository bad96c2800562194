# Kolosal health check for Windows (the guide's script): asks /v1/health and,
# unless the answer is {"status": "ok"}, posts a KolosalServerDown alert to
# Alertmanager. scripts\windows\register-health-check.ps1 runs it every 5
# minutes as a scheduled task.
# Exit code: 0 healthy, 1 unhealthy (alert sent), 2 unhealthy and the alert
# could not be sent.
param(
    [string]$KolosalUrl = $(if ($env:KOLOSAL_URL) { $env:KOLOSAL_URL } else { "http://localhost:8080" }),
    # alerts go to /api/v2/alerts (Alertmanager removed the guide's /api/v1 in 0.27)
    [string]$AlertmanagerUrl = $(if ($env:ALERTMANAGER_URL) { $env:ALERTMANAGER_URL } else { "http://alertmanager:9093" }),
    [int]$TimeoutSec = 10
)

$status = "unreachable"
try {
    $health = Invoke-RestMethod -Uri "$($KolosalUrl.TrimEnd('/'))/v1/health" -Method GET -TimeoutSec $TimeoutSec
    $status = $health.status
}
catch {
    # 503 (loading, draining, error) still carries a JSON body with the status
    $body = $_.ErrorDetails.Message
    if ($body) {
        try { $status = ($body | ConvertFrom-Json).status } catch { }
    }
}

if ($status -eq "ok") {
    exit 0
}

Write-Warning "ALERT: Kolosal Server unhealthy (status: $status)"
$payload = ConvertTo-Json -Depth 4 -InputObject @(
    @{
        labels      = @{
            alertname = "KolosalServerDown"
            service   = "kolosal-server"
            severity  = "critical"
            instance  = $KolosalUrl
        }
        annotations = @{
            summary     = "Kolosal Server unhealthy"
            description = "health status: $status"
        }
    }
)
try {
    Invoke-RestMethod -Uri "$($AlertmanagerUrl.TrimEnd('/'))/api/v2/alerts" -Method POST `
        -ContentType "application/json" -Body $payload -TimeoutSec 10 | Out-Null
}
catch {
    Write-Error "could not send the alert to ${AlertmanagerUrl}: $_"
    exit 2
}
exit 1
