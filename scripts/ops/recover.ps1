# Service recovery for Windows (the guide's Restart-KolosalService): when the
# server is not healthy, restart the KolosalServer service, wait for it to be
# healthy again, and alert Alertmanager when it is not.
# Exit code: 0 healthy (already, or after the restart), 1 still unhealthy
# (alert sent), 2 still unhealthy and the alert could not be sent.
param(
    [string]$ServiceName = "KolosalServer",
    [string]$KolosalUrl = $(if ($env:KOLOSAL_URL) { $env:KOLOSAL_URL } else { "http://localhost:8080" }),
    [string]$AlertmanagerUrl = $(if ($env:ALERTMANAGER_URL) { $env:ALERTMANAGER_URL } else { "http://alertmanager:9093" }),
    # models load before the server reports ok
    [int]$RecoveryWaitSec = 300
)

function Test-KolosalHealthy {
    try {
        return (Invoke-RestMethod -Uri "$($KolosalUrl.TrimEnd('/'))/v1/health" -TimeoutSec 10).status -eq "ok"
    }
    catch {
        return $false
    }
}

function Send-AlertNotification([string]$Reason) {
    $payload = ConvertTo-Json -Depth 4 -InputObject @(
        @{
            labels      = @{
                alertname = "KolosalServerRestartFailed"
                service   = "kolosal-server"
                severity  = "critical"
                instance  = $KolosalUrl
            }
            annotations = @{ summary = "Kolosal Server restart failed"; description = $Reason }
        }
    )
    try {
        Invoke-RestMethod -Uri "$($AlertmanagerUrl.TrimEnd('/'))/api/v2/alerts" -Method POST `
            -ContentType "application/json" -Body $payload -TimeoutSec 10 | Out-Null
        return $true
    }
    catch {
        Write-Error "could not send the alert: $_"
        return $false
    }
}

function Restart-KolosalService {
    # Stop-Service waits while the service drains (its stop wait hint covers
    # server.shutdown_grace_seconds), so no fixed sleep is needed.
    try {
        Stop-Service -Name $ServiceName -Force -ErrorAction Stop
        Start-Service -Name $ServiceName -ErrorAction Stop
    }
    catch {
        return "the restart failed: $_"
    }
    $deadline = (Get-Date).AddSeconds($RecoveryWaitSec)
    while ((Get-Date) -lt $deadline) {
        if (Test-KolosalHealthy) {
            return $null
        }
        Start-Sleep -Seconds 2
    }
    return "not healthy $RecoveryWaitSec s after the restart"
}

if (Test-KolosalHealthy) {
    exit 0
}
Write-Warning "Kolosal Server unhealthy: restarting $ServiceName"
$failure = Restart-KolosalService
if ($null -eq $failure) {
    Write-Host "Service restarted successfully"
    exit 0
}
Write-Error "Failed to restart service: $failure"
if (Send-AlertNotification $failure) { exit 1 } else { exit 2 }
