# Server-wide IIS settings for deploy\iis\web.config (Kolosal behind IIS +
# ARR). Needs IIS with the URL Rewrite and Application Request Routing
# modules installed. Run as Administrator.
#   - proxying on, with response buffering off: ARR passes each chunk of an
#     event stream on as it arrives (responseBufferLimit="0");
#   - a proxy timeout above the server's job timeout (600 s in the guide), or
#     long non-streaming completions fail with 502 after ARR's default 30 s;
#   - HTTP_X_FORWARDED_PROTO may be set by the rewrite rule.
param(
    [string]$SiteName = "Default Web Site",
    [string]$SitePath = "C:\inetpub\wwwroot",
    [string]$Timeout = "00:11:00"
)
$ErrorActionPreference = "Stop"
$appcmd = Join-Path $env:windir "System32\inetsrv\appcmd.exe"

& $appcmd set config -section:system.webServer/proxy /enabled:"True" /responseBufferLimit:"0" `
    /timeout:"$Timeout" /preserveHostHeader:"True" /reverseRewriteHostInResponseHeaders:"False" /commit:apphost
if ($LASTEXITCODE -ne 0) { throw "could not set system.webServer/proxy (is ARR installed?)" }

$existing = & $appcmd list config -section:system.webServer/rewrite/allowedServerVariables
if (-not ($existing -match "HTTP_X_FORWARDED_PROTO")) {
    & $appcmd set config -section:system.webServer/rewrite/allowedServerVariables `
        /+"[name='HTTP_X_FORWARDED_PROTO']" /commit:apphost
    if ($LASTEXITCODE -ne 0) { throw "could not allow HTTP_X_FORWARDED_PROTO (is URL Rewrite installed?)" }
}

Copy-Item (Join-Path $PSScriptRoot "..\..\deploy\iis\web.config") -Destination (Join-Path $SitePath "web.config")
& $appcmd list config $SiteName -section:system.webServer/rewrite/rules
