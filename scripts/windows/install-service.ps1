# Install Kolosal as a Windows service (the guide's install-service.ps1).
#
# The guide registers kolosal-server.exe with New-Service, but a console
# program is not a service binary: it never reports to the service control
# manager, which kills it after 30 seconds. This registers the pywin32
# service host instead (python -m kolosal.server.windows_service), which
# reports its state, drains running requests on stop and is restarted by
# the failure actions it sets (5 s, 15 s, 60 s).
#
# Run as Administrator, after installing Kolosal into a Python environment:
#   python -m pip install ".[windows]"      # in a checkout of the repository; pulls in pywin32
param(
    [string]$InstallDir = "C:\kolosal",
    [string]$Python = "C:\kolosal\venv\Scripts\python.exe",
    [string]$Config = "C:\kolosal\config\production.json",
    [string]$ServiceName = "KolosalServer",
    [ValidateSet("auto", "manual")]
    [string]$Startup = "auto",
    # e.g. "NT SERVICE\KolosalServer" (a virtual account) instead of LocalSystem
    [string]$Account = ""
)
$ErrorActionPreference = "Stop"

if (-not (Test-Path $Python)) { throw "Python not found: $Python" }
if (-not (Test-Path $Config)) { throw "config file not found: $([System.IO.Path]::GetFullPath($Config))" }

# pywin32's pythonservice.exe needs pywin32's DLLs registered for this Python
# (machine-wide when run elevated). The probe prints nothing on stderr, which
# Windows PowerShell would turn into an error under ErrorActionPreference Stop.
& $Python -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('win32serviceutil') else 3)"
if ($LASTEXITCODE -ne 0) { throw "pywin32 is missing: $Python -m pip install pywin32" }
& $Python -m pywin32_postinstall -install -quiet
if ($LASTEXITCODE -ne 0) { throw "pywin32's post-install step failed: $Python -m pywin32_postinstall -install" }

# The server checks its configuration before the service is registered
# (its messages go to stderr: let them through rather than stop on them).
$ErrorActionPreference = "Continue"
& $Python -m kolosal.server --config $Config --check-config | Out-Null
$ErrorActionPreference = "Stop"
if ($LASTEXITCODE -ne 0) { throw "the configuration is not valid: $Python -m kolosal.server --config $Config --check-config" }

$arguments = @("-m", "kolosal.server.windows_service", "install", "--config", $Config, "--name", $ServiceName,
               "--startup", $Startup)
if ($Account) { $arguments += @("--username", $Account) }
& $Python @arguments
if ($LASTEXITCODE -ne 0) { throw "service registration failed" }

# The service account writes the logs.
$logs = Join-Path $InstallDir "logs"
New-Item -Path $logs -ItemType Directory -Force | Out-Null
if ($Account) {
    icacls $logs /grant "${Account}:(OI)(CI)M" | Out-Null
}

# Start the service
Start-Service -Name $ServiceName

# Verify service status and its recovery settings
Get-Service -Name $ServiceName
sc.exe qfailure $ServiceName
