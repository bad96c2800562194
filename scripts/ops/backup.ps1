# Backup of configuration and recent logs for Windows (the guide's
# Backup-KolosalData): one zip with config\ (production config, models.json,
# keys files) and the log files changed in the last $LogDays days. Models are
# not copied (their size); config\models.json says which ones to restore.
param(
    [string]$InstallDir = "C:\kolosal",
    [string]$BackupDir = "C:\backup",
    [int]$LogDays = 7
)
$ErrorActionPreference = "Stop"

if (-not (Test-Path (Join-Path $InstallDir "config"))) {
    throw "no config folder in $InstallDir"
}
$stamp = Get-Date -Format "yyyyMMdd-HHmmss"
$staging = Join-Path $env:TEMP "kolosal-$stamp"
New-Item -Path $staging -ItemType Directory | Out-Null
try {
    Copy-Item (Join-Path $InstallDir "config") -Destination (Join-Path $staging "config") -Recurse
    $logs = Join-Path $InstallDir "logs"
    if (Test-Path $logs) {
        New-Item -Path (Join-Path $staging "logs") -ItemType Directory | Out-Null
        $since = (Get-Date).AddDays(-$LogDays)
        Get-ChildItem -Path $logs -Filter "*.log*" -File |
            Where-Object { $_.LastWriteTime -ge $since } |
            Copy-Item -Destination (Join-Path $staging "logs")
    }
    New-Item -Path $BackupDir -ItemType Directory -Force | Out-Null
    $archive = Join-Path $BackupDir "kolosal-$stamp.zip"
    Compress-Archive -Path (Join-Path $staging "*") -DestinationPath $archive
    Write-Host "Backup completed: $archive"
}
finally {
    Remove-Item -Path $staging -Recurse -Force
}
