#!/usr/bin/env bash
# Back up every project folder: one tar.gz per project and day under $BACKUP_DIR/<date>/,
# keeping $KEEP_DAYS days; with $BACKUP_CONTAINER set, also upload the day's archives to
# that Swift container (python3-swiftclient, OS_* credentials in the environment file).
#
# Label logs are append-only and fsynced per stroke, so an archive taken while the
# server runs holds every stroke acknowledged before it started reading that file.
# Exports are not backed up (they can be recomputed from a project); jobs/ folders are.
set -euo pipefail
PROJECTS_DIR=${PROJECTS_DIR:-/srv/ilastik-web/projects}
BACKUP_DIR=${BACKUP_DIR:-/srv/ilastik-web/backups}
KEEP_DAYS=${KEEP_DAYS:-14}
DAY=${BACKUP_DAY:-$(date -u +%Y-%m-%d)}

target="$BACKUP_DIR/$DAY"
mkdir -p "$target"
count=0
shopt -s nullglob
for project in "$PROJECTS_DIR"/*/; do
  project=${project%/}
  name=$(basename "$project")
  [ -f "$project/project.json" ] || continue
  tmp="$target/.$name.tar.gz.partial"
  tar -C "$PROJECTS_DIR" --exclude="$name/exports" --warning=no-file-changed \
      -czf "$tmp" "$name" || [ $? -eq 1 ]  # 1: a file changed while read (a live log)
  mv "$tmp" "$target/$name.tar.gz"
  count=$((count + 1))
done
echo "backed up $count project(s) to $target"

# Retention: drop day folders older than KEEP_DAYS (names are dates, so they sort).
cutoff=$(date -u -d "$DAY - $KEEP_DAYS days" +%Y-%m-%d)
for day in "$BACKUP_DIR"/*/; do
  day=$(basename "$day")
  if [[ $day =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ && $day < $cutoff ]]; then
    rm -rf -- "${BACKUP_DIR:?}/$day"
    echo "removed backups of $day"
  fi
done

if [ -n "${BACKUP_CONTAINER:-}" ]; then
  (cd "$BACKUP_DIR" && swift upload --skip-identical "$BACKUP_CONTAINER" "$DAY")
fi
