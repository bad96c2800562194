#!/usr/bin/env bash
# Backup of configuration and recent logs (the guide's Backup-KolosalData):
# one tar.gz with config/ (production config, models.json, keys files) and
# the log files changed in the last LOG_DAYS days. Models are not copied
# (their size); config/models.json says which ones to restore.
#
# Usage: backup.sh [INSTALL_DIR]   (default /opt/kolosal; holds config/ and logs/)
# Environment:
#   BACKUP_DIR  where the archive goes (default /var/backups/kolosal)
#   LOG_DAYS    how recent a log must be to be kept (default 7)
# Prints the archive's path.
set -euo pipefail

ROOT=${1:-/opt/kolosal}
BACKUP_DIR=${BACKUP_DIR:-/var/backups/kolosal}
LOG_DAYS=${LOG_DAYS:-7}

[ -d "$ROOT/config" ] || { echo "error: no config folder in $ROOT" >&2; exit 1; }
mkdir -p "$BACKUP_DIR"
archive="$BACKUP_DIR/kolosal-$(date +%Y%m%d-%H%M%S).tar.gz"

list=$(mktemp)
trap 'rm -f "$list"' EXIT
cd "$ROOT"
find config -type f > "$list"
if [ -d logs ]; then
  find logs -type f -name '*.log*' -mtime "-$LOG_DAYS" >> "$list"
fi
# umask: the archive holds API keys files
(umask 077 && tar -czf "$archive" -T "$list")
echo "Backup completed: $archive"
