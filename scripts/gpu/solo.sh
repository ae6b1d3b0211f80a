#!/bin/bash
# solo.sh: one run from scratch with scripts/gpu/configs/$CONFIG (or CONTINUE=1: carry/checkpoint.pt), all CPU cores rendering,
# for TRAIN seconds; then stop it (it saves) and write to $OUT its slim checkpoint (in parts
# under 16 MB: cat run-slim.part-* > run-slim.pt), weights, log and samples.
set -u
export PYTHONUNBUFFERED=1
rm -rf /tmp/repo; cp -r "$PWD" /tmp/repo; cd /tmp/repo; export PYTHONPATH=/tmp/repo
if [ -n "${CONTINUE:-}" ]; then  # continue carry/checkpoint.pt instead
  mkdir -p /tmp/A; cp carry/checkpoint.pt /tmp/A/; start=()
else
  start=(--config "scripts/gpu/configs/${CONFIG:-wide-d.json}")
fi
setsid nohup python3 -m gandissect train generator --device cuda --workers "${WORKERS:-14}" \
  --checkpoint-minutes 3 --run /tmp/A "${start[@]}" \
  > /tmp/trainA.log 2>&1 < /dev/null &
for i in $(seq 1 $(( ${TRAIN:-450} / 30 ))); do
  sleep 30; echo "$(tail -1 /tmp/A/log.jsonl 2>/dev/null)"
  tail -c 300 /tmp/trainA.log | tr '\r' '\n' | tail -1
  pgrep -f "run /tmp/A" > /dev/null || { echo "training died"; tail -30 /tmp/trainA.log; break; }
done
pkill -TERM -f "train generator"
for i in $(seq 1 60); do pgrep -f "train generator" > /dev/null || break; sleep 2; done
python3 -m gandissect train generator --run /tmp/A --slim /tmp/A-slim.pt &&
  split -b 10M /tmp/A-slim.pt "$OUT/run-slim.part-"
cp /tmp/A/samples.png /tmp/A/log.jsonl /tmp/A/sceneworld_generator.safetensors "$OUT/"
ls -la "$OUT"; nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader; uptime
