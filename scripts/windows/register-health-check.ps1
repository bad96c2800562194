# Registers the guide's periodic health check as a scheduled task: every
# $IntervalMinutes minutes PowerShell runs scripts\ops\health-check.ps1
# (alert to Alertmanager when the server is not healthy). With -Recover it
# runs scripts\ops\recover.ps1 instead (restart the service, alert when that
# does not help). Run as Administrator.
param(
    [string]$ScriptsDir = "C:\kolosal\scripts\ops",
    [string]$TaskName = "KolosalHealthCheck",
    [int]$IntervalMinutes = 5,
    [string]$KolosalUrl = "http://localhost:8080",
    [string]$AlertmanagerUrl = "http://alertmanager:9093",
    [switch]$Recover
)
$ErrorActionPreference = "Stop"

$script = Join-Path $ScriptsDir $(if ($Recover) { "recover.ps1" } else { "health-check.ps1" })
if (-not (Test-Path $script)) { throw "script not found: $script" }

$argument = "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$script`" " +
            "-KolosalUrl `"$KolosalUrl`" -AlertmanagerUrl `"$AlertmanagerUrl`""
$action = New-ScheduledTaskAction -Execute "PowerShell.exe" -Argument $argument
$trigger = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes $IntervalMinutes)
# recover.ps1 restarts a service: it needs SYSTEM; the plain check would not
$principal = New-ScheduledTaskPrincipal -UserId "NT AUTHORITY\SYSTEM" -LogonType ServiceAccount
$settings = New-ScheduledTaskSettingsSet -MultipleInstances IgnoreNew -StartWhenAvailable `
    -ExecutionTimeLimit (New-TimeSpan -Minutes 10)
Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Principal $principal `
    -Settings $settings -Force | Out-Null
Get-ScheduledTask -TaskName $TaskName
